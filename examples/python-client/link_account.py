"""Link a customer's AWS account from Python, with a client generated from
xrole's OpenAPI document by openapi-python-client (see README.md here).

    XROLE_URL=http://127.0.0.1:8080 XROLE_API_KEY=xrk_… python link_account.py

Creates a link (the response carries the quick-create URL to hand to the
customer), reads it back, finds it in the list, then shows how an error
arrives: a typed `Problem` with a stable `code`. CI runs it against a live
server (scripts/openapi-check).
"""

import os
import sys
import uuid

from xrole_client import AuthenticatedClient
from xrole_client.api.aws_accounts import aws_accounts_create, aws_accounts_get, aws_accounts_list
from xrole_client.models import AccessLevelIn, CreateLink, CreatedLink, LinkOut, Problem


def main() -> int:
    client = AuthenticatedClient(base_url=os.environ["XROLE_URL"], token=os.environ["XROLE_API_KEY"])
    with client:
        # A retry with the same Idempotency-Key (after a timeout, say) gets
        # the first answer again instead of a second link.
        created = aws_accounts_create.sync(
            client=client,
            body=CreateLink(name="Example Corp production", access_level=AccessLevelIn.READ_ONLY, region="eu-west-3"),
            idempotency_key=f"link-example-corp-{uuid.uuid4()}",
        )
        if not isinstance(created, CreatedLink):
            print(f"create failed: {created}", file=sys.stderr)
            return 1
        print(f"created link {created.id} ({created.state}), External ID {created.external_id}")
        print(f"hand this to the customer: {created.onboarding.quick_create_url[:90]}…")
        assert created.onboarding.quick_create_url.startswith("https://console.aws.amazon.com/cloudformation/")

        link = aws_accounts_get.sync(created.id, client=client)
        if not isinstance(link, LinkOut) or link.state != "pending":
            print(f"get failed: {link}", file=sys.stderr)
            return 1
        print(f"read it back: {link.name!r} is {link.state}, expires {link.expires_at}")

        page = aws_accounts_list.sync(client=client, limit=50)
        ids = [item.id for item in page.data]
        if created.id not in ids:
            print(f"the list does not hold {created.id}: {ids}", file=sys.stderr)
            return 1
        print(f"listed: {len(ids)} link(s), next_cursor={page.next_cursor}")

        # Errors are typed too: application/problem+json with a stable code.
        missing = aws_accounts_get.sync(uuid.uuid4(), client=client)
        if not (isinstance(missing, Problem) and missing.status == 404 and missing.code == "not_found"):
            print(f"expected a not_found problem, got {missing}", file=sys.stderr)
            return 1
        print(f"an unknown link answers {missing.status} {missing.code}: {missing.title}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
