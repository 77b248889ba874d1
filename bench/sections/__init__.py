"""The benchmark sections, one module each: a TITLE and `measure(sec, sizes, out)`."""

from . import (
    budgets,
    classifier,
    defaults,
    inspection,
    library,
    long,
    memory,
    peers,
    quality,
    quantize,
    sampling,
    serve,
    startup,
    throughput,
    translate,
    translation,
)

SECTIONS = {  # name -> module, in the report's order
    "throughput": throughput,
    "sampling": sampling,
    "quality": quality,
    "memory": memory,
    "startup": startup,
    "classifier": classifier,
    "translation": translation,
    "translate": translate,
    "library": library,
    "defaults": defaults,
    "budgets": budgets,
    "long": long,
    "serve": serve,
    "inspect": inspection,
    "quantize": quantize,
    "peers": peers,
}
