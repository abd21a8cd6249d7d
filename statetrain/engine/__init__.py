"""The machine and what drives it: context, declaration, driver, Trainer facade."""
