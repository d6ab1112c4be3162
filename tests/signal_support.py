"""Child processes that receive signals as if started from a terminal."""
import signal


def sigint_at_default() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT (ctrl-C).

    A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored across
    exec: Python then installs no KeyboardInterrupt handler, and the child, rightly, does not stop. So a
    test suite launched in the background (nohup, ``cmd &``) would see gfbench ignore ctrl-C; the child
    gets SIGINT's default disposition back, which is what a terminal gives it.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
