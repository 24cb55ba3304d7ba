"""The running rack: hosts (``host``), executors (``executor``), the epoch interface (``epoch``), the
controller that drives epochs (``controller``), faults (``faults``) and the gateway front end
(``frontend``)."""
