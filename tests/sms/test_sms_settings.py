"""Provider lists, per-provider settings and breaker settings from the environment."""

from __future__ import annotations

import pytest

from streamq.errors import ConfigError
from streamq.sms.breaker import BreakerPolicy, breaker_policy_from_settings
from streamq.sms.providers import AfricasTalkingSMSProvider, SalumSMSProvider
from streamq.sms.providers.factory import (
    provider_names,
    providers_from_settings,
    rate_limits_from_settings,
)

SALUM = {"SALUM_API_KEY": "sk-x", "SALUM_PARTNER_ID": "1", "SALUM_SHORTCODE": "S"}
AT = {"AT_USERNAME": "app", "AT_API_KEY": "atsk-SECRET"}


def test_the_list_comes_from_the_flag_then_sms_providers_then_streamq_provider() -> None:
    env = {"SMS_PROVIDERS": "salum, AfricasTalking", "STREAMQ_PROVIDER": "mock"}
    assert provider_names(env=env) == ["salum", "africastalking"]
    assert provider_names("africastalking,salum", env=env) == ["africastalking", "salum"]
    assert provider_names(["mock"], env=env) == ["mock"]
    assert provider_names(env={"STREAMQ_PROVIDER": "salum"}) == ["salum"]
    assert provider_names(env={}) == ["mock"]


@pytest.mark.parametrize(("choice", "error"), [
    ("salum,fax", "unknown provider 'fax'"),
    ("salum,salum", "listed twice"),
    (" , ", "empty"),
])
def test_bad_lists_are_one_clear_line(choice: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        provider_names(choice, env={})


def test_each_provider_is_configured_from_its_variables() -> None:
    salum, at = providers_from_settings("salum,africastalking", env={
        **SALUM, **AT, "AT_SENDER_ID": "SHOP", "AT_TIMEOUT": "4"})
    assert isinstance(salum, SalumSMSProvider) and isinstance(at, AfricasTalkingSMSProvider)
    assert at.send_url == "https://api.africastalking.com/version1/messaging"
    assert at.timeout_total == 4.0 and at._sender_id == "SHOP"
    sandbox = providers_from_settings("africastalking", env={
        "AT_USERNAME": "sandbox", "AT_API_KEY": "k",
        "AT_API_URL": "https://api.sandbox.africastalking.com"})[0]
    assert isinstance(sandbox, AfricasTalkingSMSProvider) and sandbox.sandbox


@pytest.mark.parametrize("missing", sorted(AT))
def test_africastalking_names_the_missing_variable(missing: str) -> None:
    env = {k: v for k, v in AT.items() if k != missing}
    with pytest.raises(ConfigError, match=missing) as info:
        providers_from_settings("africastalking", env=env)
    assert "atsk-SECRET" not in str(info.value)


def test_rate_limits() -> None:
    env = {"SALUM_RATE_LIMIT": "12.5", "AT_RATE_LIMIT": "0"}
    assert rate_limits_from_settings(["salum", "africastalking", "mock"], env=env) == {
        "salum": 12.5, "africastalking": None}
    with pytest.raises(ConfigError, match="AT_RATE_LIMIT must be a number"):
        rate_limits_from_settings(["africastalking"], env={"AT_RATE_LIMIT": "fast"})
    with pytest.raises(ConfigError, match="SALUM_RATE_LIMIT must be between"):
        rate_limits_from_settings(["salum"], env={"SALUM_RATE_LIMIT": "-1"})


def test_breaker_policy() -> None:
    assert breaker_policy_from_settings({}) == BreakerPolicy(errors=5, window_s=30, cooldown_s=30)
    assert breaker_policy_from_settings({"SMS_BREAKER_ERRORS": "3", "SMS_BREAKER_COOLDOWN": "2.5"}
                                        ) == BreakerPolicy(errors=3, cooldown_s=2.5)
    for env, error in [({"SMS_BREAKER_ERRORS": "0"}, "SMS_BREAKER_ERRORS"),
                       ({"SMS_BREAKER_ERRORS": "2.5"}, "whole number"),
                       ({"SMS_BREAKER_WINDOW": "soon"}, "SMS_BREAKER_WINDOW"),
                       ({"SMS_BREAKER_COOLDOWN": "-1"}, "SMS_BREAKER_COOLDOWN")]:
        with pytest.raises(ConfigError, match=error):
            breaker_policy_from_settings(env)
