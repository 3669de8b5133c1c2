"""Small modal screens: pick one item from a list, confirm an action."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, OptionList, Static
from textual.widgets.option_list import Option


class PickScreen(ModalScreen[str | None]):
    """A list to pick from (enter picks, escape cancels); dismisses with the picked item."""

    BINDINGS = [Binding("escape,q", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, items: list[str], current: str | None = None) -> None:
        super().__init__()
        self.title_text, self.items, self.current = title, items, current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"[b]{self.title_text}[/b]  (enter picks, escape cancels)")
            yield OptionList(*(Option(item, id=item) for item in self.items), id="pick")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.items:
            options.highlighted = self.items.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: ``y`` or the button confirms; ``n``, escape or the other button not."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, id="question")
            with Horizontal(id="buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # enter on the default does nothing harmful

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
