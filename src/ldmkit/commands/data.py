"""``ldmkit data``: inspect datasets (placeholder until the data issue lands its `data info`)."""


def add_parser(sub, formatter_class):
    p = sub.add_parser("data", help="inspect datasets", formatter_class=formatter_class)
    p.set_defaults(func=lambda args: (print("not implemented yet"), 1)[1])
