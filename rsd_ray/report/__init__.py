"""What a run tells: metrics (``metrics``), the results document (``results``), live telemetry
(``telemetry``), Perfetto timelines (``timeline``) and the compile report (``plan``)."""
