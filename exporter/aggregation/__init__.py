"""The AI aggregator's parts, one seam each (``exporter.aggregator.Aggregator`` is the
facade that holds the lock and the clock): ``stores``, ``state``, ``handlers``, ``views``,
``checkpoint``, ``contract`` (the native table) and ``feeds``."""
