"""Between cards: the rack graph and its links (``topology``) and collectives' costs over them
(``collectives``: α + β·bytes per algorithm)."""
