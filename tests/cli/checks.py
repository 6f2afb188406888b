"""What the CLI check scripts share: a check that records failures instead of stopping at the first,
and the exit status that reports them."""
import sys

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)


def finish(passed_message):
    if failures:
        print("%d failures" % len(failures))
        sys.exit(1)
    print(passed_message)
