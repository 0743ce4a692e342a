"""The CLI's commands, one module each (``cli`` assembles the parser and dispatches): convert, debug,
matrix, zoo, inspect, history, report; ``base`` holds what they share. A command imports ``base`` and
never another command or ``cli``."""
