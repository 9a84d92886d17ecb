"""The emulator's IoT Hub query language: target conditions and SELECT * FROM devices queries."""

from __future__ import annotations

import random

import pytest
from dps_emulator.hub_query import MAX_NESTING, QuerySyntaxError, parse, parse_query

TWIN = {
    "deviceId": "pi-0001",
    "status": "enabled",
    "tags": {
        "ring": "canary",
        "cohort": "greenhouse",
        "floor": 3,
        "ratio": 0.5,
        "active": True,
        "retired": None,
        "site-a": {"rack": "r1"},
        "location": {"region": "eu", "plant": "Lyon 2"},
    },
    "properties": {
        "desired": {"interval": 30, "$version": 2},
        "reported": {"firmware": "1.4.2", "interval": 30, "$version": 5},
    },
    "capabilities": {"iotEdge": True},
}


def matches(condition: str, twin: dict = TWIN) -> bool:
    return parse(condition).matches(twin)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("tags.ring = 'canary'", True),
        ("tags.ring = 'stable'", False),
        ("tags.ring != 'stable'", True),
        ("tags.ring <> 'stable'", True),
        ("tags.ring <> 'canary'", False),
        ("tags.floor < 4", True),
        ("tags.floor < 3", False),
        ("tags.floor <= 3", True),
        ("tags.floor > 2", True),
        ("tags.floor > 3", False),
        ("tags.floor >= 3", True),
        ("tags.floor >= 3.5", False),
        ("tags.ratio = 0.5", True),
        ("tags.ratio > -1", True),
        ("tags.floor = 3.0", True),
        ("tags.floor = 3e0", True),
        ("tags.ring < 'd'", True),  # strings order lexically
        ("tags.ring > 'd'", False),
        ("tags.active = true", True),
        ("tags.active = false", False),
        ("tags.retired = null", True),
        ("tags.ring = null", False),
        ("capabilities.iotEdge = true", True),
        ("deviceId = 'pi-0001'", True),
        ("status = 'enabled'", True),
        ("properties.reported.firmware = '1.4.2'", True),
        ("properties.desired.interval = properties.reported.interval", True),
        ("tags.location.region = 'eu'", True),
        ("tags.location.plant = 'Lyon 2'", True),
        ("tags['site-a'].rack = 'r1'", True),
        ('tags["site-a"]["rack"] = "r1"', True),
        ("'canary' = tags.ring", True),
        ("3 > tags.ratio", True),
    ],
)
def test_comparisons(condition, expected):
    assert matches(condition) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("tags.ring IN ['canary', 'beta']", True),
        ("tags.ring IN ['stable']", False),
        ("tags.ring IN []", False),
        ("tags.floor IN [1, 2, 3]", True),
        ("tags.floor IN ['3']", False),  # no conversion between strings and numbers
        ("deviceId IN ['pi-0002', 'pi-0001']", True),
        ("tags.ring NIN ['stable', 'beta']", True),
        ("tags.ring NIN ['canary']", False),
        ("tags.ring NIN []", True),
        ("tags.retired IN [null]", True),
        ("tags.active in [true]", True),
        ("tags.ring nin ['x']", True),
    ],
)
def test_in_and_nin(condition, expected):
    assert matches(condition) is expected


def test_star_targets_every_device():
    assert matches("*")
    assert matches("  *  ", {"deviceId": "bare"})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("tags.ring = 'canary' AND tags.floor = 3", True),
        ("tags.ring = 'canary' AND tags.floor = 4", False),
        ("tags.ring = 'x' OR tags.floor = 3", True),
        ("tags.ring = 'x' OR tags.floor = 4", False),
        ("NOT tags.ring = 'x'", True),
        ("NOT tags.ring = 'canary'", False),
        ("NOT NOT tags.ring = 'canary'", True),
        # AND binds tighter than OR: true OR (false AND false)
        ("tags.floor = 3 OR tags.ring = 'x' AND tags.ring = 'y'", True),
        # (false AND false) OR true
        ("tags.ring = 'x' AND tags.ring = 'y' OR tags.floor = 3", True),
        # parentheses override: (true OR false) AND false
        ("(tags.floor = 3 OR tags.ring = 'x') AND tags.ring = 'y'", False),
        # NOT binds tighter than AND: (NOT false) AND true
        ("NOT tags.ring = 'x' AND tags.floor = 3", True),
        # NOT binds tighter than OR: (NOT true) OR false
        ("NOT tags.floor = 3 OR tags.ring = 'x'", False),
        ("NOT (tags.floor = 3 OR tags.ring = 'x')", False),
        ("((tags.ring = 'canary'))", True),
        ("tags.ring = 'canary' and tags.floor = 3 or status = 'disabled'", True),
        ("Not tags.ring = 'x' AnD tags.floor = 3", True),
    ],
)
def test_logic_and_precedence(condition, expected):
    assert matches(condition) is expected


@pytest.mark.parametrize(
    "condition",
    [
        "tags.missing = 'x'",
        "tags.missing != 'x'",
        "tags.missing < 1",
        "tags.missing IN ['x']",
        "tags.missing NIN ['x']",
        "NOT tags.missing = 'x'",  # undefined stays undefined under NOT
        "tags.ring.deeper = 'x'",  # a path through a string
        "tags.location = 'eu'",  # an object compares with nothing
        "nosuchroot.a = 1",
        "tags.floor = '3'",  # string vs number: undefined, not an error
        "tags.ring > 3",
        "tags.ring != 3",
        "tags.active < true",  # booleans have no order
        "tags.retired < 1",
    ],
)
def test_missing_paths_and_type_mismatches_never_match(condition):
    assert matches(condition) is False


def test_undefined_in_three_valued_logic():
    assert matches("tags.missing = 'x' OR tags.ring = 'canary'")
    assert not matches("tags.missing = 'x' AND tags.ring = 'canary'")
    assert not matches("NOT (tags.missing = 'x' AND tags.ring = 'canary')")
    assert matches("NOT (tags.missing = 'x' AND tags.ring = 'x')")  # false AND undefined is false


def test_no_tags_at_all():
    bare = {"deviceId": "bare", "status": "enabled"}
    assert not matches("tags.ring = 'canary'", bare)
    assert matches("deviceId = 'bare'", bare)


def test_property_names_fall_back_to_case_insensitive_but_values_do_not():
    assert matches("DeviceID = 'pi-0001'")
    assert matches("Tags.Ring = 'canary'")
    assert not matches("tags.ring = 'CANARY'")
    assert matches("tags.key = 'exact'", {"tags": {"Key": "other", "key": "exact"}})


@pytest.mark.parametrize(
    ("condition", "value"),
    [
        ("tags.name = 'it''s'", "it's"),
        ('tags.name = "say ""hi"""', 'say "hi"'),
        ("tags.name = 'it\\'s'", "it's"),
        ('tags.name = "single \' inside"', "single ' inside"),
        ("tags.name = 'double \" inside'", 'double " inside'),
        ("tags.name = 'AND OR NOT ( ) [ ] = ,'", "AND OR NOT ( ) [ ] = ,"),
        ("tags.name = ''", ""),
    ],
)
def test_quoting(condition, value):
    assert matches(condition, {"tags": {"name": value}})
    assert not matches(condition, {"tags": {"name": value + "x"}})


def test_condition_keeps_its_text():
    assert parse("  tags.ring = 'canary' ").text == "tags.ring = 'canary'"


def test_query_without_where_selects_every_device():
    query = parse_query("SELECT * FROM devices")
    assert query.condition is None
    assert query.matches({"deviceId": "any"})


def test_query_with_where():
    query = parse_query("select * from DEVICES where deviceId IN ['pi-0001', 'pi-0002'] AND tags.ring = 'canary'")
    assert query.condition is not None
    assert query.condition.text == "deviceId IN ['pi-0001', 'pi-0002'] AND tags.ring = 'canary'"
    assert query.matches(TWIN)
    assert not query.matches(dict(TWIN, deviceId="pi-0003"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "column 1: expected a condition or '*', found end of text"),
        ("   ", "expected a condition or '*', found end of text"),
        ("(tags.ring = 'canary'", "column 22: expected ')' or AND / OR, found end of text"),
        ("tags.ring = 'canary')", "column 21: expected AND, OR or end of text, found ')'"),
        ("((tags.a = 1)", "expected ')' or AND / OR"),
        ("tags.ring = 'canary' tags.floor = 3", "column 22: expected AND, OR or end of text, found 'tags'"),
        ("tags.ring == 'canary'", "column 12: expected a property path or a literal, found '='"),
        ("tags.ring LIKE 'can%'", "column 11: expected a comparison operator"),
        ("tags.ring ~ 'x'", "column 11: unexpected character '~'"),
        ("tags.ring = 'canary", "column 13: unterminated string literal"),
        ('tags.ring = "canary', "unterminated string literal"),
        ("tags.ring =", "expected a property path or a literal, found end of text"),
        ("tags.ring", "expected a comparison operator (= != <> < > <= >= IN NIN), found end of text"),
        ("tags. = 1", "expected a property name after '.'"),
        ("tags[ring] = 1", "expected a quoted property name after '['"),
        ("tags.ring IN 'canary'", "expected '[' after IN / NIN"),
        ("tags.ring IN ['a' 'b']", "expected ',' or ']'"),
        ("tags.ring IN ['a',]", "expected a literal in the IN / NIN list, found ']'"),
        ("tags.ring IN [tags.other]", "expected a literal (string, number, true, false, null)"),
        ("tags.a = 1 AND", "expected a property path, a literal, NOT or '(', found end of text"),
        ("OR tags.a = 1", "column 1: expected a property path, a literal, NOT or '(', found 'OR'"),
        ("NOT", "found end of text"),
        ("()", "column 2: expected a property path, a literal, NOT or '(', found ')'"),
        ("* AND tags.a = 1", "expected end of text after '*'"),
        ("tags.a = 12abc", "invalid number '12abc'"),
        ("tags.a = 1\nAND tags.b = ", "line 2, column 14: expected a property path or a literal, found end of text"),
    ],
)
def test_syntax_errors_name_position_and_expectation(text, fragment):
    with pytest.raises(QuerySyntaxError) as raised:
        parse(text)
    message = str(raised.value)
    assert message.startswith("Syntax error at line ")
    assert fragment in message


def test_metric_queries_select_paths_from_devices_or_modules():
    """Configuration metrics are written `SELECT deviceId FROM devices[.modules] WHERE ...`, with configuration ids
    escaped in double brackets."""
    query = parse_query("SELECT deviceId FROM devices WHERE configurations.[[edge-base-1]].status = 'Applied'")
    assert (query.collection, query.projection) == ("devices", (("deviceId",),))
    assert query.matches({"deviceId": "a", "configurations": {"edge-base-1": {"status": "Applied"}}})
    assert not query.matches({"deviceId": "b", "configurations": {"edge-base-1": {"status": "Targeted"}}})
    assert not query.matches({"deviceId": "c"})

    modules = parse_query(
        "SELECT deviceId, moduleId FROM devices.modules WHERE moduleId = '$edgeAgent' "
        "AND properties.reported.lastDesiredStatus.code = 200"
    )
    assert (modules.collection, modules.projection) == ("devices.modules", (("deviceId",), ("moduleId",)))
    reported = {"lastDesiredStatus": {"code": 200}}
    assert modules.matches({"deviceId": "a", "moduleId": "$edgeAgent", "properties": {"reported": reported}})
    assert not modules.matches({"deviceId": "a", "moduleId": "$edgeHub", "properties": {"reported": reported}})

    everything = parse_query("SELECT * FROM devices")
    assert (everything.collection, everything.projection, everything.condition) == ("devices", None, None)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected SELECT, found end of text"),
        ("tags.a = 1", "expected SELECT, found 'tags'"),
        ("SELECT FROM devices", "expected '*' or a property path to select, found 'FROM'"),
        ("SELECT deviceId, FROM devices", "expected '*' or a property path to select, found 'FROM'"),
        ("SELECT 1 FROM devices", "expected '*' or a property path to select, found '1'"),
        ("SELECT * devices", "expected FROM, found 'devices'"),
        ("SELECT * FROM devices.jobs", "expected modules after 'devices.', found 'jobs'"),
        ("SELECT * FROM jobs", "expected devices or devices.modules (the collections supported), found 'jobs'"),
        ("SELECT * FROM devices WHERE configurations.[[x = 1", "expected a name closed by ']]' after '[['"),
        ("SELECT * FROM devices WHERE", "expected a condition or '*', found end of text"),
        ("SELECT * FROM devices tags.a = 1", "expected WHERE, found 'tags'"),
        ("SELECT * FROM devices WHERE tags.a = 1 GROUP BY tags.a", "expected AND, OR or end of text, found 'GROUP'"),
    ],
)
def test_query_syntax_errors(text, fragment):
    with pytest.raises(QuerySyntaxError) as raised:
        parse_query(text)
    assert fragment in str(raised.value)


def test_deep_nesting_is_a_syntax_error_not_a_crash():
    depth = MAX_NESTING + 1
    with pytest.raises(QuerySyntaxError, match="nest deeper than"):
        parse("(" * depth + "tags.a = 1" + ")" * depth)
    with pytest.raises(QuerySyntaxError, match="nest deeper than"):
        parse("NOT " * 5000 + "tags.a = 1")
    assert parse("(" * 50 + "tags.a = 1" + ")" * 50).matches({"tags": {"a": 1}})


def test_non_text_is_a_syntax_error():
    with pytest.raises(QuerySyntaxError):
        parse(None)  # type: ignore[arg-type]
    with pytest.raises(QuerySyntaxError):
        parse_query(42)  # type: ignore[arg-type]


FUZZ_ALPHABET = [
    *"abcdeINOTRAND*()[]'\",.=!<>-0123456789 \t\n\\$_~",
    " AND ",
    " OR ",
    "NOT ",
    " IN ",
    " NIN ",
    "tags.",
    "'x'",
    "SELECT * FROM devices WHERE ",
]


def test_fuzz_only_query_syntax_errors_escape():
    """Random text either parses (and then evaluates to a bool on any twin) or raises QuerySyntaxError."""
    generator = random.Random(20)
    twins = [TWIN, {}, {"tags": None}, {"tags": {"a": [1, 2], "b": {"c": 1}}}]
    parsed = 0
    for _ in range(4000):
        text = "".join(generator.choice(FUZZ_ALPHABET) for _ in range(generator.randint(0, 30)))
        for parser in (parse, parse_query):
            try:
                result = parser(text)
            except QuerySyntaxError as error:
                assert str(error).startswith(("Syntax error at line ", "expected the query as text"))
                continue
            parsed += 1
            for twin in twins:
                assert isinstance(result.matches(twin), bool)
    assert parsed > 0  # the alphabet does produce valid conditions
