"""The dialog-info codec is shared with the SDK (which PUBLISHes it); it lives in :mod:`gamesdk.sip.dialog_info`."""

from gamesdk.sip.dialog_info import *
from gamesdk.sip.dialog_info import __all__  # noqa: F401
