"""Settings: defaults, environment parsing, the TOML file and their precedence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import CONFIG_FILE_ENV, AllowedCaller, Destination, Settings, load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No ``AINODE_*`` variable from the outside, and a temp working directory."""
    import os

    for name in list(os.environ):
        if name.startswith("AINODE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------- defaults
def test_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load_settings()

    assert settings.ae_title == "AINODE"
    assert settings.port == 11112
    assert settings.spool_dir == Path("./var")
    assert settings.spool_path == (tmp_path / "var").resolve()
    assert settings.incoming_dir == settings.spool_path / "incoming"
    assert settings.results_dir == settings.spool_path / "results"
    assert settings.database_url is None
    assert settings.effective_database_url == f"sqlite:///{settings.spool_path / 'ainode.db'}"
    assert settings.broker_url is None
    assert settings.uses_embedded_broker
    assert settings.embedded_broker_dir == settings.spool_path / "broker"
    assert settings.destinations == []
    assert settings.allowed_callers == []
    assert [rule.pipeline for rule in settings.routing_rules] == ["ct-lungs", "mr-brain"]


def test_explicit_database_and_broker_urls(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AINODE_DATABASE_URL", "postgresql://u@db/ainode")
    clean_env.setenv("AINODE_BROKER_URL", "redis://127.0.0.1:6379/0")

    settings = load_settings()

    assert settings.effective_database_url == "postgresql://u@db/ainode"
    assert not settings.uses_embedded_broker


# --------------------------------------------------------------------- environment
def test_env_scalars(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AINODE_AE_TITLE", "MYNODE")
    clean_env.setenv("AINODE_PORT", "4242")
    clean_env.setenv("AINODE_STABILITY_SECONDS", "2.5")
    clean_env.setenv("AINODE_WORKER_QUEUES", "cpu, send")

    settings = load_settings()

    assert settings.ae_title == "MYNODE"
    assert settings.port == 4242
    assert settings.stability_seconds == 2.5
    assert settings.worker_queues == ["cpu", "send"]


def test_env_destinations(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AINODE_DESTINATIONS", "A@127.0.0.1:104,B@h:11112")

    settings = load_settings()

    assert settings.destinations == [
        Destination(ae_title="A", host="127.0.0.1", port=104),
        Destination(ae_title="B", host="h", port=11112),
    ]
    assert [str(d) for d in settings.destinations] == ["A@127.0.0.1:104", "B@h:11112"]


def test_env_allowed_callers(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AINODE_ALLOWED_CALLERS", "MODALITY, PACS@10.0.0.5")

    settings = load_settings()

    assert settings.allowed_callers == [
        AllowedCaller(ae_title="MODALITY", host=None),
        AllowedCaller(ae_title="PACS", host="10.0.0.5"),
    ]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AINODE_AE_TITLE", "A" * 17, "not a valid AE title"),
        ("AINODE_AE_TITLE", "BACK\\SLASH", "not a valid AE title"),
        ("AINODE_DESTINATIONS", "A@127.0.0.1", "destination must look like AE@host:port"),
        ("AINODE_DESTINATIONS", "nohost:104", "destination must look like AE@host:port"),
        ("AINODE_DESTINATIONS", "ABCDEFGHIJKLMNOPQ@h:104", "destination must look like"),
        ("AINODE_DESTINATIONS", "A@h:99999", "less than or equal to 65535"),
        ("AINODE_ALLOWED_CALLERS", "A@h:104", "allowed caller must look like AE or AE@host"),
        ("AINODE_PORT", "70000", "less than or equal to 65535"),
        ("AINODE_STABILITY_SECONDS", "0", "greater than 0"),
    ],
)
def test_bad_env_values_are_rejected_clearly(
    clean_env: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    clean_env.setenv(variable, value)

    with pytest.raises(ValidationError, match=re.escape(message)):
        load_settings()


def test_destination_parse_direct() -> None:
    assert Destination.parse(" PACS@pacs.example:4242 ") == Destination(
        ae_title="PACS", host="pacs.example", port=4242
    )
    with pytest.raises(ValueError, match="AE@host:port"):
        Destination.parse("PACS@pacs.example:")


@pytest.mark.parametrize(
    ("text", "tls", "seg_type", "canonical"),
    [
        ("PACS@h:104", False, "BINARY", "PACS@h:104"),
        ("PACS@h:104/tls", True, "BINARY", "PACS@h:104/tls"),
        ("PACS@h:104/labelmap", False, "LABELMAP", "PACS@h:104/labelmap"),
        ("PACS@h:104/tls/labelmap", True, "LABELMAP", "PACS@h:104/tls/labelmap"),
        ("PACS@h:104/LabelMap/TLS", True, "LABELMAP", "PACS@h:104/tls/labelmap"),
        ("PACS@h:104/binary", False, "BINARY", "PACS@h:104"),
        ("PACS@h:104/tls/binary", True, "BINARY", "PACS@h:104/tls"),
        ("PACS@h:104/labelmap/commit", False, "LABELMAP", "PACS@h:104/commit/labelmap"),
    ],
)
def test_destination_options_and_round_trip(
    text: str, tls: bool, seg_type: str, canonical: str
) -> None:
    destination = Destination.parse(text)

    assert (destination.tls, destination.seg_type) == (tls, seg_type)
    assert destination.commit == ("/commit" in text)
    assert str(destination) == canonical  # what deliveries store
    assert Destination.parse(str(destination)) == destination


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PACS@h:104/jpeg", "unknown destination option /jpeg"),
        ("PACS@h:104/", "unknown destination option /"),
        ("PACS@h:104/tls/tls", "sets tls twice"),
        ("PACS@h:104/binary/labelmap", "sets seg_type twice"),
    ],
)
def test_bad_destination_options_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Destination.parse(text)


def test_seg_types_follow_the_destinations(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().seg_types == ["BINARY"]  # no destination: results stay BINARY
    clean_env.setenv("AINODE_DESTINATIONS", "A@h:104,B@h:105")
    assert load_settings().seg_types == ["BINARY"]
    clean_env.setenv("AINODE_DESTINATIONS", "A@h:104/labelmap")
    assert load_settings().seg_types == ["LABELMAP"]
    clean_env.setenv("AINODE_DESTINATIONS", "A@h:104/tls/labelmap, B@h:105")
    assert load_settings().seg_types == ["BINARY", "LABELMAP"]


# --------------------------------------------------------------------- TOML file
def test_toml_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "node.toml",
        f"""
ae_title = "FILENODE"
port = 2000
spool_dir = "{tmp_path / "spool"}"
destinations = ["PACS@127.0.0.1:4242"]
allowed_callers = ["CT1", "CT2@10.1.1.1"]
""",
    )

    settings = load_settings(config)

    assert settings.ae_title == "FILENODE"
    assert settings.port == 2000
    assert settings.spool_path == tmp_path / "spool"
    assert settings.destinations == [Destination(ae_title="PACS", host="127.0.0.1", port=4242)]
    assert settings.allowed_callers == [
        AllowedCaller(ae_title="CT1"),
        AllowedCaller(ae_title="CT2", host="10.1.1.1"),
    ]


def test_toml_destinations_with_seg_type(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "node.toml",
        """
destinations = [
    "OLD@10.0.0.1:104",
    "NEW@10.0.0.2:104/tls/labelmap",
    { ae_title = "VIEWER", host = "10.0.0.3", port = 11112, seg_type = "labelmap" },
    { ae_title = "ARCHIVE", host = "10.0.0.4", port = 104, commit = true },
]
""",
    )

    settings = load_settings(config)

    assert [str(d) for d in settings.destinations] == [
        "OLD@10.0.0.1:104",
        "NEW@10.0.0.2:104/tls/labelmap",
        "VIEWER@10.0.0.3:11112/labelmap",
        "ARCHIVE@10.0.0.4:104/commit",
    ]
    seg_types = [d.seg_type for d in settings.destinations]
    assert seg_types == ["BINARY", "LABELMAP", "LABELMAP", "BINARY"]


def test_unknown_seg_type_in_toml_is_rejected(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write_toml(
        tmp_path / "node.toml",
        'destinations = [{ ae_title = "V", host = "h", port = 104, seg_type = "fractional" }]\n',
    )

    with pytest.raises(ValidationError, match="'BINARY' or 'LABELMAP'"):
        load_settings(config)


def test_config_env_variable_and_env_wins_over_file(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write_toml(tmp_path / "node.toml", 'ae_title = "FILENODE"\nport = 2000\n')
    clean_env.setenv(CONFIG_FILE_ENV, str(config))
    clean_env.setenv("AINODE_PORT", "3000")

    settings = load_settings()

    assert settings.ae_title == "FILENODE"  # from the file named by AINODE_CONFIG
    assert settings.port == 3000  # the environment wins over the file
    assert load_settings(port=5000).port == 5000  # explicit overrides win over both


def test_missing_config_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="configuration file not found"):
        load_settings(tmp_path / "absent.toml")


def test_routing_rules_from_toml(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "node.toml",
        """
[[routing_rules]]
name = "chest-ct"
pipeline = "ct-lungs"
modality = ["ct"]
series_description = "chest|thorax"
min_instances = 10

[[routing_rules]]
name = "any-mr"
pipeline = "mr-brain"
modality = "MR"
""",
    )

    rules = load_settings(config).routing_rules

    assert [(r.name, r.pipeline) for r in rules] == [
        ("chest-ct", "ct-lungs"),
        ("any-mr", "mr-brain"),
    ]
    chest, mr = rules
    assert chest.modality == frozenset({"CT"})
    assert chest.min_instances == 10
    assert chest.series_description is not None
    assert chest.series_description.search("Routine THORAX 1mm")
    assert not chest.series_description.search("Abdomen")
    assert mr.modality == frozenset({"MR"})
    assert mr.series_description is None


def test_duplicate_rule_names_rejected(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "node.toml",
        """
[[routing_rules]]
name = "same"
pipeline = "ct-lungs"

[[routing_rules]]
name = "same"
pipeline = "other"
""",
    )

    with pytest.raises(ValidationError, match=r"routing rule names must be unique: \['same'\]"):
        load_settings(config)


def test_bad_regex_in_toml_rejected(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "node.toml",
        '[[routing_rules]]\nname = "r"\npipeline = "p"\nseries_description = "(unclosed"\n',
    )

    with pytest.raises(ValidationError, match="invalid series_description regex"):
        load_settings(config)


def test_settings_direct_construction_validates(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="not a valid AE title"):
        Settings(ae_title="")


def test_the_example_site_configuration_loads(clean_env: pytest.MonkeyPatch) -> None:
    """``deploy/node.example.toml`` is what an administrator copies: it must stay valid."""
    example = Path(__file__).parents[2] / "deploy" / "node.example.toml"

    settings = load_settings(example)

    assert settings.receiver_processes == 1
    assert {rule.pipeline for rule in settings.routing_rules} >= {"ct-lungs", "cxr-classify"}
    assert settings.destinations[0].ae_title == "PACS"


def test_destination_formats_are_canonical_and_name_the_kos_variant(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    viewer = Destination.parse("V@h:104/formats=KOS+sc+sr")
    config = write_toml(
        tmp_path / "node.toml",
        """
destinations = [{ ae_title = "PACS", host = "h", port = 104, formats = ["kos", "seg", "sr"] }]
""",
    )
    [pacs] = load_settings(config).destinations

    assert viewer.formats == ["sr", "sc", "kos"] and viewer.kos_variant == "sr+sc"
    assert str(viewer) == "V@h:104/formats=sr+sc+kos"
    assert Destination.parse(str(viewer)) == viewer
    assert str(Destination.parse("P@h:104/formats=seg+sr")) == "P@h:104"
    assert (pacs.formats, pacs.kos_variant) == (["seg", "sr", "kos"], "seg+sr")
    with pytest.raises(ValueError, match="unknown formats"):
        Destination.parse("V@h:104/formats=pdf")
    labelmap = Destination.parse("R@h:104/formats=seg-labelmap+sr+kos")
    assert (labelmap.seg_type, labelmap.formats) == ("LABELMAP", ["seg", "sr", "kos"])
    assert str(labelmap) == "R@h:104/labelmap/formats=seg+sr+kos"
