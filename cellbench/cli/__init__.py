"""The Typer command tree. Modules here parse, call the core and render; nothing imports them."""
