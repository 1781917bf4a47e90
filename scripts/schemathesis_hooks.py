"""schemathesis hooks of scripts/schemathesis (loaded via SCHEMATHESIS_HOOKS).

Two request rules depend on the server's state, which no schema can state;
schemathesis' `positive_data_acceptance` judges each request alone, so
without these hooks it would report the server's correct 422 answers:

- `expires_at` of `POST /v1/api-keys` is a `date-time` that must be in the
  future (the OpenAPI document says so). schemathesis draws `date-time`
  values from year 0001 to 9999. Here they are drawn from two days after
  start-up to the year 9998, in every shape RFC 3339 allows (fractions of 0
  to 6 digits, `Z` or a `±HH:MM` offset). Invalid date-times (negative
  testing) are unaffected: schemathesis builds those itself.
- An `Idempotency-Key` used again with another body answers 422 (the IETF
  draft's rule). schemathesis draws short keys, and draws the same one for
  different bodies. Here every valid key gets a suffix unique to this run,
  and stays valid; invalid keys (negative testing) are sent as drawn. The
  replay and reuse rules have their own tests (crates/xrole-server/tests).

And one response format needs a reader: the CloudFormation template's YAML
uses CloudFormation's tags (`!Ref`, `!Equals`…), which schemathesis' YAML
reader refuses (the error killed its worker threads). The reader below maps
them as CloudFormation does, so the template route is tested like the rest.
"""

import datetime
import itertools
import re
import secrets

import schemathesis
from schemathesis.core import media_types
from hypothesis import strategies as st

_UTC = datetime.timezone.utc
_EARLIEST = datetime.datetime.now(_UTC) + datetime.timedelta(days=2)
_LATEST = datetime.datetime(9998, 12, 31, tzinfo=_UTC)


def _render(instant: datetime.datetime, offset_minutes: int, fraction: str) -> str:
    local = (instant + datetime.timedelta(minutes=offset_minutes)).replace(tzinfo=None)
    if offset_minutes == 0 and fraction != "-":
        offset = "Z"
    else:
        sign = "+" if offset_minutes >= 0 else "-"
        hours, minutes = divmod(abs(offset_minutes), 60)
        offset = f"{sign}{hours:02d}:{minutes:02d}"
    frac = "" if fraction in ("", "-") else "." + fraction
    return local.strftime("%Y-%m-%dT%H:%M:%S") + frac + offset


_future_date_times = st.builds(
    _render,
    st.datetimes(
        min_value=_EARLIEST.replace(tzinfo=None),
        max_value=_LATEST.replace(tzinfo=None),
    ).map(lambda naive: naive.replace(tzinfo=_UTC)),
    st.one_of(st.just(0), st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59)),
    # "-" spells a zero offset as "+00:00" instead of "Z".
    st.one_of(st.just(""), st.just("-"), st.text(alphabet="0123456789", min_size=1, max_size=6)),
)

schemathesis.openapi.format("date-time", _future_date_times)


# The document's `Idempotency-Key` pattern: 1 to 255 visible ASCII
# characters, optionally in double quotes (`""` is empty).
_IDEMPOTENCY_KEY = re.compile(r'([!-~]|[!#-~][!-~]|"[!#-~]|[!-~]{3,255}|"[!-~]{254,255}")')
_RUN = secrets.token_hex(4)
_COUNTER = itertools.count()


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() != "idempotency-key" or not isinstance(value, str):
            continue
        if not _IDEMPOTENCY_KEY.fullmatch(value):
            continue
        suffix = f"~{_RUN}{next(_COUNTER)}"
        # 3 to 255 visible ASCII characters: valid whatever was drawn.
        headers[name] = value[: 255 - len(suffix)] + suffix


# The CloudFormation template (`GET /v1/cloudformation/xrole-role.yaml`) is
# YAML whose intrinsic functions are tags (`!Ref`, `!Equals`, `!GetAtt`…),
# which a plain YAML reader refuses. Read as CloudFormation does, each tag
# becomes its JSON form (`{"Ref": …}`, `{"Fn::Equals": […]}`), and the
# document is checked against the template's schema.
def _cloudformation_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(loader, suffix, node):
        name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if suffix == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    Loader.add_multi_constructor("!", intrinsic)
    return Loader


_CFN_LOADER = _cloudformation_loader()


# Registered for every YAML media type schemathesis knows: its own reader
# matches `application/yaml` through any of them (same family), and a new
# registration takes over an existing one in place.
@schemathesis.deserializer(*media_types.YAML_MEDIA_TYPES)
def _cloudformation_yaml(ctx, response):
    import yaml

    return yaml.load(response.content, Loader=_CFN_LOADER)
