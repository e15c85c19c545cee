"""What a Prometheus exporter in a lab answers."""

import urllib.request


def scrape(address, port=9121, path="/metrics"):
    """The exporter at ``address:port`` (redis_exporter: 9121, node-exporter: 9100):
    ``{sample name with labels: value}``."""
    with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=10) as answer:
        text = answer.read().decode()
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines()
            if line and not line.startswith("#")}
