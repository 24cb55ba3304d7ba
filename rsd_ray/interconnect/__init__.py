"""Between cards: the rack graph and its links (``topology``), collectives' costs over them
(``collectives``) and a step's Device Syncs, collective choice and layer pipelining (``sync``)."""
