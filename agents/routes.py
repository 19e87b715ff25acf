"""Where each kind of effect goes, on both runtimes: one table.

    every effect    the audit: the effects topic (Kafka), the effects table (SQLite)
    OUTBOX          the sender: the effects that become LINE messages (staff calls and reminders
                    too: alerts to the staff on duty), and unfollow / follow, which send nothing
                    but tell the sender whose lone pushes to leave out
    ESCALATIONS     the call queue and the families (on Kafka the escalations topic, which the read
                    side and the worker's phone lookup read): staff calls, contacts told, and what
                    ends them
"""
from agents.messages import SENDS_MESSAGES, STAFF_ALERTS
from schemas import effects as fx

OUTBOX = SENDS_MESSAGES | STAFF_ALERTS | {fx.UNFOLLOWED, fx.FOLLOWED}
ESCALATIONS = frozenset({fx.STAFF_CALL, fx.CONTACTS_NOTIFIED, fx.RESOLVED_AFTER_ESCALATION, fx.CONTACT_ACKNOWLEDGED})
