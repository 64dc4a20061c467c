"""The dialog-info codec is shared with the SDK (which PUBLISHes it); it lives in :mod:`gamesdk.sip.dialog_info`."""

from gamesdk.sip.dialog_info import *  # noqa: F403
from gamesdk.sip.dialog_info import __all__ as __all__  # noqa: F401
