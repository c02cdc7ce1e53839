"""The `foundry` command: one thin function per verb.

Each verb parses its options and calls a plain Python function with the same arguments, imported lazily so
`foundry --help` stays fast. User mistakes (`UserError`) print one line each on stderr and exit 1; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional, TypeVar

import typer

from llmfoundry.errors import UserError

app = typer.Typer(
    name="foundry",
    help="Train your own language models from one YAML file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
tokenizer_app = typer.Typer(help="Train tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")

_state = {"debug": False}
T = TypeVar("T")


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    _state["debug"] = debug


def run_user_code(fn: Callable[[], T]) -> T:
    """Run a verb; a UserError becomes one stderr line per problem and exit code 1."""
    try:
        return fn()
    except UserError as err:
        if _state["debug"]:
            raise
        for line in err.problems:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


CONFIG_ARG = typer.Argument(..., help="Path to the YAML config.", show_default=False)
OVERRIDES_ARG = typer.Argument(None, help="key=value overrides applied last, e.g. max_duration=20ba.")


@app.command()
def train(
    config: Path = CONFIG_ARG,
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    print_config: bool = typer.Option(False, "--print-config", help="Print the fully resolved config and exit."),
) -> None:
    """Pretrain or finetune a model described by a YAML config."""

    def go() -> None:
        from llmfoundry.config import load_typed
        from llmfoundry.config.schema import TrainConfig

        _, loaded = load_typed(TrainConfig, config, overrides or [])
        if print_config:
            typer.echo(loaded.to_yaml(), nl=False)
            return
        raise UserError("the training loop is not available yet in this build; use --print-config to check a config")

    run_user_code(go)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="foundry")


if __name__ == "__main__":
    sys.exit(main())
