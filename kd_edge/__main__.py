"""``kd-edge`` and ``python -m kd_edge``: the full command line, or the runtime's own where typer is not installed
(a board installed offline from a bundle: numpy and onnxruntime only)."""

import sys


def main() -> int:
    try:
        import rich  # noqa: F401
        import typer  # noqa: F401
    except ModuleNotFoundError:
        from kd_edge.runtime.board_cli import main as runtime_commands

        return runtime_commands()
    from kd_edge.cli import main as full_command_line

    return full_command_line()


if __name__ == "__main__":
    sys.exit(main())
