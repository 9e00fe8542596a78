"""placeholder"""
def main(args):
    raise NotImplementedError
