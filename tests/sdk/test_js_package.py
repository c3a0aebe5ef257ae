"""The browser SDK as an npm package (``client_sdk/js/package.json``): what it points at exists, what
``mllmdr.js`` exports is what its declarations declare, and its version is the project's."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from stream_server.protocol import PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "client_sdk" / "js"
PACKAGE = json.loads((JS / "package.json").read_text())


def test_package_fields_point_at_packed_files() -> None:
    assert PACKAGE["name"] == "@mllmdr/client"
    assert PACKAGE["type"] == "module"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert PACKAGE["version"] == project["version"]
    files = set(PACKAGE["files"])
    assert files == {"mllmdr.js", "mllmdr.d.ts", "client.d.ts", "protocol.schema.json"}
    for name in files:
        assert (JS / name).is_file(), name
    root = PACKAGE["exports"]["."]
    targets = [PACKAGE["main"], PACKAGE["module"], PACKAGE["types"], root["types"], root["default"]]
    targets += [v for k, v in PACKAGE["exports"].items() if k != "."]
    for target in targets:
        assert target.startswith("./") and (JS / target).is_file(), target
        assert target[2:] in files | {"package.json"}, target
    assert root["types"] == PACKAGE["types"] == "./mllmdr.d.ts"
    assert list(root) == ["types", "default"]  # "types" must come first for TypeScript
    assert root["default"] == PACKAGE["main"] == "./mllmdr.js"


def test_declarations_cover_the_module_exports() -> None:
    js = (JS / "mllmdr.js").read_text()
    exported = set(re.findall(r"^export (?:async )?(?:function|class|const) (\w+)", js, re.M))
    client = (JS / "client.d.ts").read_text()
    declared = set(re.findall(r"^export declare (?:function|class|const) (\w+)", client, re.M))
    assert exported == declared
    assert declared == {
        "PROTOCOL_VERSION",
        "MllmdrError",
        "tokenClaims",
        "connect",
        "Session",
        "toRtcIceServers",
        "SPEECH_AUDIO_CONSTRAINTS",
        "audioConstraints",
        "captureMedia",
        "audioProcessing",
    }
    assert f"export const PROTOCOL_VERSION = {PROTOCOL_VERSION};" in js
    assert f"export declare const PROTOCOL_VERSION: {PROTOCOL_VERSION};" in client
    assert 'export * from "./client.js";' in (JS / "mllmdr.d.ts").read_text()  # one entry point: both
    imported = re.search(r"import type \{([^}]*)\} from \"\./mllmdr\.js\"", client)
    assert imported is not None
    generated = (JS / "mllmdr.d.ts").read_text()
    for name in (n.strip() for n in imported[1].split(",") if n.strip()):
        assert re.search(rf"^export (?:interface|type) {name}\b", generated, re.M), name
