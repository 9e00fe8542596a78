// The live board: tiles (a batch per event) and the alert list arrive as server-sent events from /stream and replace
// their elements in place. EventSource reconnects by itself; on every connect the server sends every tile.
(function () {
  "use strict";
  var stream = new EventSource("/stream");

  function element(html) {
    var holder = document.createElement("div");
    holder.innerHTML = html;
    return holder.firstElementChild;
  }

  stream.addEventListener("tiles", function (e) {
    JSON.parse(e.data).tiles.forEach(place);
  });

  function place(data) {
    var tile = element(data.html);
    var old = document.getElementById("tile-" + data.rack);
    if (old) {
      old.replaceWith(tile);
    } else {
      var tiles = document.getElementById("tiles");
      var empty = document.getElementById("no-racks");
      if (empty) empty.remove();
      var after = Array.prototype.find.call(tiles.children, function (t) { return t.id > tile.id; });
      tiles.insertBefore(tile, after || null);
    }
  }

  stream.addEventListener("alerts", function (e) {
    var box = element(JSON.parse(e.data).html);
    document.getElementById("alerts").replaceWith(box);
    htmx.process(box);
  });
})();
