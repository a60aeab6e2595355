"""How a finished reply is read back (chat.turns.stored): the status its `done` frame and a reload show."""

import pytest

from chat.models import Conversation, Message
from chat.turns import Stored, stored
from tests.billing.conftest import make_record


@pytest.mark.django_db
def test_a_reply_is_shown_failed_when_its_usage_record_failed_whatever_its_message_says():
    conversation = Conversation.objects.create(visitor="v" * 32)

    def reply(status):
        return Message.objects.create(conversation=conversation, role="assistant", content="Hal", status=status)

    failed, stopped, unrecorded = reply("completed"), reply("stopped"), reply("completed")
    failed_record = make_record(message=failed, status="failed")
    stopped_record = make_record(message=stopped, status="stopped")
    assert stored(failed, False) == Stored(failed.pk, "failed", "Hal", failed_record, False)
    assert stored(stopped, True) == Stored(stopped.pk, "stopped", "Hal", stopped_record, True)
    assert stored(unrecorded, False) == Stored(unrecorded.pk, "completed", "Hal", None, False)
