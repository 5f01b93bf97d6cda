"""gateway.config: defaults, conf/gateway.toml drift, every validation path with its exact message."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import config as config_module
from gateway.config import (
    DEFAULT_PASSWORD,
    Config,
    ConfigError,
    DaemonConfig,
    LogConfig,
    SipConfig,
    is_loopback,
    load_config,
    resolve_state_dir,
)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "gateway.toml"

SIP_KEYS = (
    "listen, port, platform_id, domain, password, t1, t2, t4, max_message_size, udp_queue_size, source_rate_limit, "
    "max_transactions, retry_after, tcp_max_connections, tcp_idle_timeout"
)
PASSWORD_REFUSED = (
    "sip.password = '12345678': expected a password of your own: the default is printed in every device"
    " manual, and sip.listen = {listen!r} is not a loopback address, so anyone who can reach the port could"
    " register as a device"
)


def errors_of(data: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(data)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


# --- defaults and the shipped file ----------------------------------------------------------------------


def test_defaults() -> None:
    c = Config()
    assert c.sip == SipConfig(
        listen="127.0.0.1",
        port=5060,
        platform_id="34020000002000000001",
        domain="3402000000",
        password="12345678",
        t1=0.5,
        t2=4.0,
        t4=5.0,
        max_message_size=65536,
        udp_queue_size=2048,
        source_rate_limit=500,
        max_transactions=10000,
        retry_after=5,
        tcp_max_connections=1024,
        tcp_idle_timeout=120.0,
    )
    assert c.log == LogConfig(level="info", format="auto")
    assert c.daemon == DaemonConfig(state_dir="", graceful_timeout=10.0)
    assert DEFAULT_PASSWORD == "12345678"


def test_load_none_is_defaults() -> None:
    assert load_config(None) == Config()
    assert Config.from_mapping({}) == Config()
    assert Config.from_mapping({"sip": {}, "log": {}, "daemon": {}}) == Config()


def test_shipped_file_equals_defaults() -> None:
    assert load_config(CONF) == Config()


def test_shipped_file_lists_every_key_explicitly() -> None:
    with CONF.open("rb") as fp:
        data = tomllib.load(fp)
    expected = {
        table: [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        for table, cls in Config.sections().items()
    }
    assert {table: list(values) for table, values in data.items()} == expected


def test_shipped_file_comments_every_key() -> None:
    lines = CONF.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", "[")):
            assert lines[i - 1].startswith("#"), f"conf/gateway.toml line {i + 1} has no comment: {line}"


def test_every_field_has_an_attribute_docstring() -> None:
    tree = ast.parse(inspect.getsource(config_module))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for name in ("Config", "SipConfig", "LogConfig", "DaemonConfig"):
        body = classes[name].body
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.AnnAssign) and "ClassVar" not in ast.unparse(stmt.annotation):
                nxt = body[i + 1] if i + 1 < len(body) else None
                assert (
                    isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                ), f"{name}.{ast.unparse(stmt.target)} has no docstring"


# --- valid values ----------------------------------------------------------------------------------------


def test_full_valid_mapping() -> None:
    c = Config.from_mapping(
        {
            "sip": {
                "listen": "0.0.0.0",
                "port": 0,
                "platform_id": "44010000002000000001",
                "domain": "4401000000",
                "password": "s3cret!",
                "t1": 1,
                "t2": 8,
                "t4": 10.5,
                "max_message_size": 1024,
                "udp_queue_size": 1,
                "max_transactions": 1,
                "retry_after": 1,
                "tcp_max_connections": 100_000,
                "tcp_idle_timeout": 86400,
            },
            "log": {"level": "debug", "format": "json"},
            "daemon": {"state_dir": "/var/lib/gb28181", "graceful_timeout": 0.1},
        }
    )
    assert c.sip.port == 0
    assert c.sip.t1 == 1.0 and type(c.sip.t1) is float
    assert type(c.sip.t2) is float and type(c.sip.tcp_idle_timeout) is float
    assert c.sip.max_message_size == 1024
    assert c.log.level == "debug" and c.log.format == "json"
    assert c.daemon.state_dir == "/var/lib/gb28181"


@pytest.mark.parametrize("value", [0, 1, 65535])
def test_port_edges(value: int) -> None:
    assert Config.from_mapping({"sip": {"port": value}}).sip.port == value


@pytest.mark.parametrize("value", [1024, 16 * 1024 * 1024])
def test_max_message_size_edges(value: int) -> None:
    assert Config.from_mapping({"sip": {"max_message_size": value}}).sip.max_message_size == value


def test_t2_equal_to_t1_is_fine() -> None:
    assert Config.from_mapping({"sip": {"t1": 2, "t2": 2.0}}).sip.t2 == 2.0


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_log_levels(level: str) -> None:
    assert Config.from_mapping({"log": {"level": level}}).log.level == level


# --- invalid values: exact messages -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # integers: range, wrong type, bool is not an int
        ({"sip": {"port": 70000}}, "sip.port = 70000: expected an integer 0..65535"),
        ({"sip": {"port": -1}}, "sip.port = -1: expected an integer 0..65535"),
        ({"sip": {"port": True}}, "sip.port = True: expected an integer 0..65535"),
        ({"sip": {"port": "5060"}}, "sip.port = '5060': expected an integer 0..65535"),
        ({"sip": {"port": 5060.0}}, "sip.port = 5060.0: expected an integer 0..65535"),
        (
            {"sip": {"max_message_size": 1023}},
            "sip.max_message_size = 1023: expected an integer 1024..16777216",
        ),
        (
            {"sip": {"max_message_size": 16 * 1024 * 1024 + 1}},
            "sip.max_message_size = 16777217: expected an integer 1024..16777216",
        ),
        (
            {"sip": {"max_message_size": False}},
            "sip.max_message_size = False: expected an integer 1024..16777216",
        ),
        ({"sip": {"udp_queue_size": 0}}, "sip.udp_queue_size = 0: expected an integer 1..1000000"),
        ({"sip": {"max_transactions": 0}}, "sip.max_transactions = 0: expected an integer 1..1000000"),
        ({"sip": {"retry_after": 0}}, "sip.retry_after = 0: expected an integer 1..3600"),
        ({"sip": {"retry_after": 1.5}}, "sip.retry_after = 1.5: expected an integer 1..3600"),
        ({"sip": {"tcp_max_connections": 0}}, "sip.tcp_max_connections = 0: expected an integer 1..100000"),
        # seconds: > 0, bounded, finite, numbers only
        ({"sip": {"t1": 0}}, "sip.t1 = 0: expected a number of seconds > 0 and <= 60"),
        ({"sip": {"t1": -0.5}}, "sip.t1 = -0.5: expected a number of seconds > 0 and <= 60"),
        ({"sip": {"t1": 61}}, "sip.t1 = 61: expected a number of seconds > 0 and <= 60"),
        ({"sip": {"t1": True}}, "sip.t1 = True: expected a number of seconds > 0 and <= 60"),
        ({"sip": {"t1": "0.5"}}, "sip.t1 = '0.5': expected a number of seconds > 0 and <= 60"),
        ({"sip": {"t1": float("nan")}}, "sip.t1 = nan: expected a number of seconds > 0 and <= 60"),
        ({"sip": {"t4": float("inf")}}, "sip.t4 = inf: expected a number of seconds > 0 and <= 600"),
        (
            {"sip": {"tcp_idle_timeout": 0}},
            "sip.tcp_idle_timeout = 0: expected a number of seconds > 0 and <= 86400",
        ),
        (
            {"daemon": {"graceful_timeout": 0}},
            "daemon.graceful_timeout = 0: expected a number of seconds > 0 and <= 3600",
        ),
        # t2 >= t1
        ({"sip": {"t2": 0.25}}, "sip.t2 = 0.25: expected a number of seconds >= sip.t1 (0.5)"),
        ({"sip": {"t1": 5, "t2": 4}}, "sip.t2 = 4.0: expected a number of seconds >= sip.t1 (5.0)"),
        # IDs
        (
            {"sip": {"platform_id": "3402000000200000001"}},
            "sip.platform_id = '3402000000200000001': expected a string of exactly 20 digits,"
            " e.g. '34020000002000000001'",
        ),
        (
            {"sip": {"platform_id": "340200000020000000012"}},
            "sip.platform_id = '340200000020000000012': expected a string of exactly 20 digits,"
            " e.g. '34020000002000000001'",
        ),
        (
            {"sip": {"platform_id": "3402000000200000000A"}},
            "sip.platform_id = '3402000000200000000A': expected a string of exactly 20 digits,"
            " e.g. '34020000002000000001'",
        ),
        (
            {"sip": {"platform_id": 34020000002000000001}},
            "sip.platform_id = 34020000002000000001: expected a string of exactly 20 digits,"
            " e.g. '34020000002000000001'",
        ),
        (
            {"sip": {"domain": "３４０２０００００"}},  # full-width digits: str.isdigit() says yes, we say no
            "sip.domain = '３４０２０００００': expected a string of exactly 10 digits, e.g. '3402000000'",
        ),
        (
            {"sip": {"domain": "340200000"}},
            "sip.domain = '340200000': expected a string of exactly 10 digits, e.g. '3402000000'",
        ),
        (
            {"sip": {"domain": "3402000000\n"}},
            "sip.domain = '3402000000\\n': expected a string of exactly 10 digits, e.g. '3402000000'",
        ),
        # addresses
        (
            {"sip": {"listen": "localhost"}},
            "sip.listen = 'localhost': expected an IP address such as '127.0.0.1', '0.0.0.0' or '::1'",
        ),
        (
            {"sip": {"listen": ""}},
            "sip.listen = '': expected an IP address such as '127.0.0.1', '0.0.0.0' or '::1'",
        ),
        (
            {"sip": {"listen": 2130706433}},
            "sip.listen = 2130706433: expected an IP address such as '127.0.0.1', '0.0.0.0' or '::1'",
        ),
        # password
        ({"sip": {"password": ""}}, "sip.password = '': expected a non-empty string"),
        ({"sip": {"password": 87654321}}, "sip.password = <hidden int>: expected a non-empty string"),
        # log
        (
            {"log": {"level": "verbose"}},
            "log.level = 'verbose': expected one of 'debug', 'info', 'warning', 'error'",
        ),
        (
            {"log": {"level": "INFO"}},
            "log.level = 'INFO': expected one of 'debug', 'info', 'warning', 'error'",
        ),
        ({"log": {"format": True}}, "log.format = True: expected one of 'auto', 'json', 'console'"),
        # daemon
        (
            {"daemon": {"state_dir": 5}},
            "daemon.state_dir = 5: expected a directory path string ('' for the default)",
        ),
        (
            {"daemon": {"state_dir": "a\0b"}},
            "daemon.state_dir = 'a\\x00b': expected a directory path string ('' for the default)",
        ),
        # unknown tables and keys, tables that are not tables
        (
            {"sip": {"prot": 5060}},
            f"sip.prot = 5060: unknown key (did you mean 'port'?), expected one of {SIP_KEYS}",
        ),
        ({"sip": {"zzz": 1}}, f"sip.zzz = 1: unknown key, expected one of {SIP_KEYS}"),
        (
            {"sip": {"pasword": "hunter2"}},  # a misspelt secret is still hidden
            f"sip.pasword = <hidden str>: unknown key (did you mean 'password'?), expected one of {SIP_KEYS}",
        ),
        (
            {"log": {"levle": "debug", "extra": {"a": 1}}},
            "log.levle = 'debug': unknown key (did you mean 'level'?), expected one of level, format",
        ),
        (
            {"sipp": {"port": 1}},
            "sipp = {'port': 1}: unknown table (did you mean [sip]?), expected one of [sip], [devices], [media], [rtsp], [http], [webrtc], [log], [daemon]",
        ),
        ({"cascade": {}}, "cascade = {}: unknown table, expected one of [sip], [devices], [media], [rtsp], [http], [webrtc], [log], [daemon]"),
        ({"port": 5060}, "port = 5060: unknown table, expected one of [sip], [devices], [media], [rtsp], [http], [webrtc], [log], [daemon]"),
        ({"daemon": 5}, "daemon = 5: expected a table [daemon]"),
        ({"log": ["info"]}, "log = ['info']: expected a table [log]"),
    ],
)
def test_invalid(data: dict[str, Any], message: str) -> None:
    assert message in errors_of(data)


def test_nested_unknown_key_is_reported_with_its_value() -> None:
    assert errors_of({"log": {"extra": {"a": 1}}}) == (
        "log.extra = {'a': 1}: unknown key, expected one of level, format",
    )


def test_all_errors_are_collected_across_tables_in_order() -> None:
    assert errors_of(
        {
            "sip": {"port": 70000, "prot": 1, "t1": 5.0, "t2": 1, "domain": "34"},
            "log": {"level": "verbose", "format": True},
            "bogus": {},
            "daemon": {"graceful_timeout": -1},
        }
    ) == (
        f"sip.prot = 1: unknown key (did you mean 'port'?), expected one of {SIP_KEYS}",
        "sip.port = 70000: expected an integer 0..65535",
        "sip.domain = '34': expected a string of exactly 10 digits, e.g. '3402000000'",
        "sip.t2 = 1.0: expected a number of seconds >= sip.t1 (5.0)",
        "log.level = 'verbose': expected one of 'debug', 'info', 'warning', 'error'",
        "log.format = True: expected one of 'auto', 'json', 'console'",
        "bogus = {}: unknown table, expected one of [sip], [devices], [media], [rtsp], [http], [webrtc], [log], [daemon]",
        "daemon.graceful_timeout = -1: expected a number of seconds > 0 and <= 3600",
    )


def test_t2_not_compared_when_t1_itself_is_invalid() -> None:
    assert errors_of({"sip": {"t1": -1, "t2": 0.1}}) == (
        "sip.t1 = -1: expected a number of seconds > 0 and <= 60",
    )


# --- the default password beyond loopback ----------------------------------------------------------------


@pytest.mark.parametrize(
    "listen", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "fe80::1", "::ffff:10.0.0.1"]
)
def test_default_password_beyond_loopback_is_refused(listen: str) -> None:
    assert errors_of({"sip": {"listen": listen}}) == (PASSWORD_REFUSED.format(listen=listen),)
    assert errors_of({"sip": {"listen": listen, "password": "12345678"}}) == (
        PASSWORD_REFUSED.format(listen=listen),
    )


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"])
def test_default_password_on_loopback_is_fine(listen: str) -> None:
    c = Config.from_mapping({"sip": {"listen": listen}})
    assert c.sip.listen == listen and c.sip.password == DEFAULT_PASSWORD


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "192.168.1.10"])
def test_own_password_beyond_loopback_is_fine(listen: str) -> None:
    c = Config.from_mapping({"sip": {"listen": listen, "password": "Str0ng-and-mine"}})
    assert c.sip.listen == listen


def test_password_rule_skipped_when_listen_is_invalid() -> None:
    assert errors_of({"sip": {"listen": "example.com"}}) == (
        "sip.listen = 'example.com': expected an IP address such as '127.0.0.1', '0.0.0.0' or '::1'",
    )


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.255.0.1") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("128.0.0.1")


# --- construction in code is validated too; secrets stay out of repr and summary ---------------------------


def test_sections_built_in_code_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^sip\.port = -1: expected an integer 0\.\.65535$"):
        SipConfig(port=-1)
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(SipConfig(), listen="0.0.0.0")
    assert info.value.errors == (PASSWORD_REFUSED.format(listen="0.0.0.0"),)
    assert dataclasses.replace(SipConfig(), port=0).port == 0
    assert SipConfig(t1=1).t1 == 1.0 and type(SipConfig(t1=1).t1) is float


def test_frozen() -> None:
    c = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.sip.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.sip = SipConfig()  # type: ignore[misc]


def test_password_not_in_repr_or_summary() -> None:
    c = Config.from_mapping({"sip": {"password": "very-secret-pw"}})
    assert "very-secret-pw" not in repr(c)
    summary = c.summary()
    assert "password" not in summary["sip"]
    assert "very-secret-pw" not in repr(summary)
    assert summary["sip"]["port"] == 5060
    assert summary["log"] == {"level": "info", "format": "auto"}
    assert summary["daemon"] == {"state_dir": "", "graceful_timeout": 10.0}


def test_config_error_accepts_one_string() -> None:
    exc = ConfigError("one problem")
    assert exc.errors == ("one problem",) and str(exc) == "one problem"


# --- files -------------------------------------------------------------------------------------------------


def test_load_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[sip]\nport = 0\npassword = "x"\n[log]\nformat = "json"\n', encoding="utf-8")
    c = load_config(path)
    assert c.sip.port == 0 and c.sip.password == "x" and c.log.format == "json"


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.errors == (f"cannot read {str(path)!r}: No such file or directory",)


def test_load_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[sip]\nport = \n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (message,) = info.value.errors
    assert message.startswith(f"{str(path)!r} is not valid TOML: ")
    assert "line 2" in message


def test_load_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gbk.toml"
    path.write_bytes('[sip]\npassword = "摄像机"\n'.encode("gbk"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (message,) = info.value.errors
    assert message.startswith(f"{str(path)!r} is not valid")


def test_load_file_reports_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("[sip]\nport = 70000\nprot = true\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    # Per table: unknown keys first, then the known keys in declaration order.
    assert info.value.errors == (
        f"sip.prot = True: unknown key (did you mean 'port'?), expected one of {SIP_KEYS}",
        "sip.port = 70000: expected an integer 0..65535",
    )


# --- state directory ---------------------------------------------------------------------------------------


def test_state_dir_default_is_var() -> None:
    assert resolve_state_dir(Config(), {}) == Path("var")
    assert resolve_state_dir(Config(), {"STATE_DIRECTORY": ""}) == Path("var")


def test_state_dir_from_systemd() -> None:
    assert resolve_state_dir(Config(), {"STATE_DIRECTORY": "/var/lib/gb28181-gateway"}) == Path(
        "/var/lib/gb28181-gateway"
    )
    # StateDirectory= with several names: systemd joins them with ':'; the first is ours.
    assert resolve_state_dir(Config(), {"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}) == Path("/var/lib/a")


def test_state_dir_explicit_wins_over_systemd() -> None:
    c = Config.from_mapping({"daemon": {"state_dir": "/srv/gb"}})
    assert resolve_state_dir(c, {"STATE_DIRECTORY": "/var/lib/gb28181-gateway"}) == Path("/srv/gb")


def test_state_dir_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/run/from-env")
    assert resolve_state_dir(Config()) == Path("/run/from-env")
    monkeypatch.delenv("STATE_DIRECTORY")
    assert resolve_state_dir(Config()) == Path("var")


# --- invariant: any parsed TOML either loads or raises ConfigError ----------------------------------------

_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
    st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "34020000002000000001", "3402000000", "info", "json"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
_field_names = [f.name for cls in Config.sections().values() for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
_keys = st.sampled_from([*_field_names, "bogus"])
_tables = st.dictionaries(
    st.sampled_from(["sip", "log", "daemon", "rtsp", "bogus"]),
    st.one_of(st.dictionaries(_keys, _values, max_size=6), _scalars),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(_tables)
def test_any_mapping_loads_or_raises_config_error(data: dict[str, Any]) -> None:
    try:
        c = Config.from_mapping(data)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)
    else:
        assert isinstance(c, Config)
        assert Config.from_mapping(dataclasses.asdict(c)) == c


# --- environment overrides ---------------------------------------------------------------------------------

DEVICE = "34020000001320000001"


def test_env_variable_names() -> None:
    assert config_module.env_variable("sip", "port") == "GB28181_SIP_PORT"
    assert config_module.env_variable("devices", "keepalive_interval") == "GB28181_DEVICES_KEEPALIVE_INTERVAL"
    assert config_module.env_names({"GB28181_SIP_PORT": "1", "PATH": "/bin", "GB28181_LOG_LEVEL": "x"}) == [
        "GB28181_LOG_LEVEL", "GB28181_SIP_PORT"]
    assert config_module.describe_source(None, {}) == "built-in defaults"
    assert config_module.describe_source(Path("gw.toml"), {"GB28181_SIP_PORT": "1", "GB28181_HTTP_TOKEN": "t"}) == (
        "gw.toml + environment GB28181_HTTP_TOKEN, GB28181_SIP_PORT")


def test_env_overrides_every_key_with_its_toml_syntax() -> None:
    """Every key of every table has a variable; writing each default the documented way gives the defaults."""
    def env_text(value: Any, f: dataclasses.Field[Any]) -> str:
        if isinstance(value, str):
            return value  # string keys: verbatim
        if isinstance(value, tuple):  # arrays, and tables stored as sorted pairs
            return "{}" if f.metadata["rule"].expected.startswith("a table") else "[]"
        return str(value).lower() if isinstance(value, bool) else repr(value)

    defaults = Config()
    environ = {
        config_module.env_variable(table, f.name): env_text(getattr(getattr(defaults, table), f.name), f)
        for table, cls in Config.sections().items()
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }
    assert len(environ) == sum(len(dataclasses.fields(cls)) for cls in Config.sections().values())  # type: ignore[arg-type]
    assert load_config(None, environ) == defaults


def test_env_values() -> None:
    c = load_config(None, {
        "GB28181_SIP_PORT": "5070",
        "GB28181_SIP_T1": "1",  # an integer where seconds are expected, as in the file
        "GB28181_SIP_T2": "4.5",
        "GB28181_SIP_PASSWORD": "87654321",  # digits, but a string key: taken verbatim, not as a number
        "GB28181_SIP_LISTEN": "0.0.0.0",
        "GB28181_HTTP_TOKEN": '"0123456789abcdef"',  # a quoted TOML string is unquoted (env files with quotes)
        "GB28181_HTTP_METRICS_TOKEN": "'fedcba9876543210'",
        "GB28181_DEVICES_ALLOW": f'["{DEVICE}", "34020000001320000002"]',
        "GB28181_DEVICES_PASSWORDS": f'{{ {DEVICE} = "pw1", "34020000001320000002" = "pw2" }}',
        "GB28181_MEDIA_DIALECTS": f'{{ "{DEVICE}" = "streamprofile" }}',
        "GB28181_LOG_LEVEL": "debug",
        "GB28181_DAEMON_STATE_DIR": "/srv/state dir",
    })
    assert (c.sip.port, c.sip.t1, c.sip.t2, c.sip.listen) == (5070, 1.0, 4.5, "0.0.0.0")
    assert c.sip.password == "87654321"
    assert c.http.token == "0123456789abcdef" and c.http.metrics_token == "fedcba9876543210"
    assert c.devices.allow == (DEVICE, "34020000001320000002")
    assert c.devices.password_for(DEVICE, "x") == "pw1"
    assert c.media.dialect_for(DEVICE) == "streamprofile"
    assert (c.log.level, c.daemon.state_dir) == ("debug", "/srv/state dir")


def test_env_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[sip]\nport = 5061\npassword = "from-file"\n[log]\nlevel = "warning"\n', encoding="utf-8")
    c = load_config(path, {"GB28181_SIP_PORT": "5070", "GB28181_RTSP_PORT": "0"})
    assert (c.sip.port, c.sip.password, c.log.level, c.rtsp.port) == (5070, "from-file", "warning", 0)
    assert load_config(path, {}).sip.port == 5061
    assert load_config(None, {"GB28181_SIP_PORT": "5070"}) == Config(sip=SipConfig(port=5070))


def test_env_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GB28181_SIP_PORT", "5071")
    assert load_config(None).sip.port == 5071
    assert config_module.describe_source(None) == "built-in defaults + environment GB28181_SIP_PORT"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GB28181_SIP_PORT": "70000"}, "sip.port (from GB28181_SIP_PORT) = 70000: expected an integer 0..65535"),
        ({"GB28181_SIP_PORT": "abc"}, "sip.port (from GB28181_SIP_PORT) = 'abc': expected an integer 0..65535"),
        ({"GB28181_SIP_PORT": ""}, "sip.port (from GB28181_SIP_PORT) = '': expected an integer 0..65535"),
        ({"GB28181_SIP_PORT": '"5070"'},
         "sip.port (from GB28181_SIP_PORT) = '5070': expected an integer 0..65535"),
        ({"GB28181_SIP_PORT": "true"}, "sip.port (from GB28181_SIP_PORT) = True: expected an integer 0..65535"),
        # One TOML value only: a second line does not smuggle in another key.
        ({"GB28181_SIP_PORT": "5070\nlisten = '0.0.0.0'"},
         "sip.port (from GB28181_SIP_PORT) = \"5070\\nlisten = '0.0.0.0'\": expected an integer 0..65535"),
        ({"GB28181_LOG_LEVEL": "verbose"},
         "log.level (from GB28181_LOG_LEVEL) = 'verbose': expected one of 'debug', 'info', 'warning', 'error'"),
        ({"GB28181_DEVICES_ALLOW": DEVICE},  # a TOML integer: the array needs brackets and quotes
         f"devices.allow (from GB28181_DEVICES_ALLOW) = {DEVICE}: expected a list of 20-digit device IDs,"
         " e.g. ['34020000001320000001'] ([] allows every device)"),
        # Secrets stay hidden, from the environment too.
        ({"GB28181_HTTP_TOKEN": "short-secret"},
         "http.token (from GB28181_HTTP_TOKEN) = <hidden str>: expected '' or a token of 16 to 256 visible ASCII"
         " characters (no spaces)"),
        ({"GB28181_SIP_PASSWORD": ""}, "sip.password (from GB28181_SIP_PASSWORD) = '': expected a non-empty string"),
        # A cross-field rule names the variable where it names the key.
        ({"GB28181_SIP_LISTEN": "0.0.0.0"}, PASSWORD_REFUSED.replace(
            "sip.listen = ", "sip.listen (from GB28181_SIP_LISTEN) = ").format(listen="0.0.0.0")),
        ({"GB28181_SIP_PROT": "5070"},
         "GB28181_SIP_PROT: unknown environment variable (did you mean GB28181_SIP_PORT, for sip.port?);"
         " GB28181_<TABLE>_<KEY> variables set configuration keys, e.g. GB28181_SIP_PORT for sip.port"),
        ({"GB28181_sip_port": "5070"},
         "GB28181_sip_port: unknown environment variable (did you mean GB28181_SIP_PORT, for sip.port?);"
         " GB28181_<TABLE>_<KEY> variables set configuration keys, e.g. GB28181_SIP_PORT for sip.port"),
        ({"GB28181_DEVICES_ALLOWLIST": "[]"},
         "GB28181_DEVICES_ALLOWLIST: unknown environment variable (did you mean GB28181_DEVICES_ALLOW, for"
         " devices.allow?); GB28181_<TABLE>_<KEY> variables set configuration keys, e.g. GB28181_SIP_PORT for"
         " sip.port"),
        ({"GB28181_NOTHING_LIKE_IT": "1"},
         "GB28181_NOTHING_LIKE_IT: unknown environment variable; GB28181_<TABLE>_<KEY> variables set"
         " configuration keys, e.g. GB28181_SIP_PORT for sip.port"),
    ],
)
def test_env_invalid(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ)
    assert info.value.errors == (message,)


def test_env_errors_come_with_the_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[sip]\nt1 = 0\n[log]\nlevel = "loud"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, {"GB28181_LOG_LEVEL": "louder", "GB28181_LOG_LEVL": "x", "GB28181_SIP_PORT": "-1"})
    assert info.value.errors == (
        "GB28181_LOG_LEVL: unknown environment variable (did you mean GB28181_LOG_LEVEL, for log.level?);"
        " GB28181_<TABLE>_<KEY> variables set configuration keys, e.g. GB28181_SIP_PORT for sip.port",
        "sip.port (from GB28181_SIP_PORT) = -1: expected an integer 0..65535",
        "sip.t1 = 0: expected a number of seconds > 0 and <= 60",
        "log.level (from GB28181_LOG_LEVEL) = 'louder': expected one of 'debug', 'info', 'warning', 'error'",
    )


def test_env_does_not_hide_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", {"GB28181_SIP_PORT": "5070"})
    assert info.value.errors == (f"cannot read {str(tmp_path / 'nope.toml')!r}: No such file or directory",)


def test_env_on_a_table_the_file_got_wrong(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text("sip = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, {"GB28181_SIP_PORT": "5070"})
    assert info.value.errors == ("sip = 5: expected a table [sip]",)


# --- reload --------------------------------------------------------------------------------------------------


def test_reloadable_keys_exist() -> None:
    keys = {f"{table}.{f.name}" for table, cls in Config.sections().items()
            for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    assert config_module.RELOADABLE <= keys
    assert config_module.RELOADABLE == {"sip.password", "devices.allow", "devices.passwords", "devices.alarm_rate",
                                        "devices.alarm_retention", "log.level"}


def test_changed_keys() -> None:
    old = Config()
    assert old.changed_keys(Config()) == []
    new = Config.from_mapping({"sip": {"port": 5070, "password": "x"}, "log": {"level": "debug"},
                               "devices": {"passwords": {DEVICE: "p"}}})
    assert old.changed_keys(new) == ["sip.port", "sip.password", "devices.passwords", "log.level"]
    assert new.changed_keys(old) == old.changed_keys(new)


def test_with_reloadable_takes_only_the_reloadable_keys() -> None:
    old = Config.from_mapping({"sip": {"port": 5070}})
    new = Config.from_mapping({"sip": {"port": 5080, "password": "new-pw", "t1": 1.0},
                               "devices": {"allow": [DEVICE], "passwords": {DEVICE: "own"}, "keepalive_count": 9},
                               "log": {"level": "warning", "format": "json"}})
    applied = old.with_reloadable(new)
    assert old.changed_keys(applied) == ["sip.password", "devices.allow", "devices.passwords", "log.level"]
    assert (applied.sip.port, applied.sip.t1, applied.devices.keepalive_count, applied.log.format) == (
        5070, 0.5, 3, "auto")
    assert applied.sip.password == "new-pw" and applied.devices.allow == (DEVICE,)
    assert old == Config.from_mapping({"sip": {"port": 5070}})  # frozen: a new Config


def test_with_reloadable_validates_against_the_running_keys() -> None:
    # Valid on its own (loopback), but the running gateway listens beyond loopback: the default password is refused.
    running = Config.from_mapping({"sip": {"listen": "0.0.0.0", "password": "mine"}})
    with pytest.raises(ConfigError) as info:
        running.with_reloadable(Config())
    assert info.value.errors == (PASSWORD_REFUSED.format(listen="0.0.0.0"),)
