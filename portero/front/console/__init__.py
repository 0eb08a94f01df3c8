"""The web console at ``/console`` (``[console] enabled = true``): see :mod:`.views` for the pages,
:mod:`.auth` for the login, :mod:`.approver` for how it decides approvals next to Telegram."""

from .approver import ConsoleApprover
from .views import Console

__all__ = ["Console", "ConsoleApprover"]
