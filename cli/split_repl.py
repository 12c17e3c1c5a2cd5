"""The chat loop when the model is split across ranks: rank 0 reads each line and
passes it on; every rank runs it on its own session, so all stay in step.

Every rank handles every line the same way (slash commands included) and streams
the same reply; after each token rank 0 says whether Ctrl-C stopped it, so all
ranks stop at the same token. Ctrl-C during the prefill stops at the first token
(the other ranks are mid-prefill too). Files named in /save are written by rank
0 alone; /load and the cache files are refused (the other ranks cannot read
rank 0's files).
"""

from __future__ import annotations

from .repl import ChatRepl


class RankReader:
    """Rank 0: the user's line, passed on. Other ranks: rank 0's line."""

    def __init__(self, link, reader=None):
        self.link, self.reader = link, reader

    def read(self):
        line = self.reader.read() if self.link.rank == 0 else None
        return self.link.text_from_rank0(line)


class SplitRepl(ChatRepl):
    interrupt_prefill = False

    def __init__(self, link, session, reader, console, notes, markdown: bool = True):
        super().__init__(session, RankReader(link, reader), console, notes, markdown)
        self.link = link

    def stop_now(self, interrupted) -> bool:
        return bool(self.link.from_rank0([int(interrupted.is_set())], 1)[0])

    def do_save(self, arg):
        if self.link.rank == 0:
            super().do_save(arg)

    def do_load(self, arg):
        _refuse("/load")

    def do_save_cache(self, arg):
        _refuse("/save-cache")

    def do_load_cache(self, arg):
        _refuse("/load-cache")


def _refuse(command: str):
    raise ValueError(f"{command} is not available while the model is split across ranks")
