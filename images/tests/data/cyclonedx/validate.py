"""Validates a CycloneDX 1.6 JSON BOM on stdin against the official schema beside this file
(bom-1.6.schema.json with the spdx and jsf schemas it refers to, copied unchanged from
CycloneDX/specification's schema/ at commit e02a34ae42a48239f54e04f75280b9000b29f1fb, Apache-2.0). Exit 0 if valid; else prints the first errors and exits 1. Needs `jsonschema` (4.18+).
"""
import json
import pathlib
import sys

from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

here = pathlib.Path(__file__).parent
schemas = [json.loads((here / f).read_text()) for f in ("bom-1.6.schema.json", "spdx.schema.json", "jsf-0.82.schema.json")]
registry = Registry().with_resources(
    [(s["$id"], Resource.from_contents(s, default_specification=DRAFT7)) for s in schemas]
)
validator = Draft7Validator(schemas[0], registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER)
errors = sorted(validator.iter_errors(json.load(sys.stdin)), key=lambda e: list(e.path))
for e in errors[:20]:
    print("/".join(map(str, e.path)), e.message)
sys.exit(1 if errors else 0)
