"""``TrainingArguments``: transformers 5.24's fields, their validation rules, the enums they take,
the derived process facts, and which arguments this version acts on.

May import ``statetrain.events`` only; everything else imports it.
"""
