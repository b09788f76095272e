"""Effect measurement: report counters, the statistics of lift, reports as JSON, text and HTML."""
