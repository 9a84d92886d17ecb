"""The batch sizes and failure threshold of renew.yml and ca_rollover.yml (filter iotfleet.aziot.batch_problems)."""

from __future__ import annotations

import pytest

from ansible_collections.iotfleet.aziot.plugins.filter.batch_problems import FilterModule, batch_problems


@pytest.mark.parametrize("serial", [None, 1, "25", "10%", [1, "20%"], "1,20%", " 2 , 50% ", ["3"]])
def test_batch_sizes_as_ansible_reads_serial_pass(serial) -> None:
    assert batch_problems(serial, "renew_serial", 10, "renew_max_fail_percentage") == []


@pytest.mark.parametrize(("serial", "shown"), [("soon", "soon"), ("1,soon", "1,soon"), ([1, "-2"], "1,-2"), ([], "")])
def test_a_bad_batch_size_is_one_line_naming_the_variable(serial, shown: str) -> None:
    assert batch_problems(serial, "ca_rollover_serial") == [
        f"ca_rollover_serial={shown}: ca_rollover_serial must be batch sizes, as device counts or percentages: "
        "25, '10%' or [1, '20%']"
    ]


@pytest.mark.parametrize("threshold", [0, 10, "100", 100])
def test_a_percentage_from_0_to_100_passes(threshold) -> None:
    assert batch_problems(None, "renew_serial", threshold, "renew_max_fail_percentage") == []


@pytest.mark.parametrize("threshold", [120, -1, "ten"])
def test_a_threshold_outside_0_to_100_is_named(threshold) -> None:
    assert batch_problems(None, "renew_serial", threshold, "renew_max_fail_percentage") == [
        f"renew_max_fail_percentage={threshold}: renew_max_fail_percentage must be a percentage from 0 to 100"
    ]


def test_both_problems_are_reported_at_once() -> None:
    assert len(batch_problems("soon", "renew_serial", 120, "renew_max_fail_percentage")) == 2


def test_the_filter_is_registered() -> None:
    assert FilterModule().filters() == {"batch_problems": batch_problems}
