"""One card: its cost model (``costmodel``), memory ledger (``ledger``), power and heat (``power``), the
plain card (``card``) and the group of cards one instance drives (``card_group``)."""
