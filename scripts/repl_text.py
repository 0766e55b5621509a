"""llama-repl's commands that change the text: :tokens, :text, :add, :back, :pick, :reset,
:truncate and :gen (streamed, Ctrl-C stops it). Each parses its words, calls the
llama.session.Session and prints what it returns; scripts/repl.py's Repl inherits them
(TextCommands) with its printing (write, style, show, show_table) and its session."""

from __future__ import annotations

from .terminal import ReplError, int_arg, show_piece

HELP = """\
  :gen [N]             generate N tokens (default: the 'gen' setting), streamed; Ctrl-C stops
  :pick K              append the K-th candidate of the table and continue from it
  :add TEXT            append TEXT to the current text (a plain line replaces it)
  :text TEXT           set the text to TEXT exactly (e.g. text that starts with ':')
  :back [N]            remove the last N tokens (default 1)
  :tokens              show the current tokens (pieces with ids) and the table again"""

HELP_END = """\
  :truncate            keep the last tokens of a text that did not fit the context
  :reset               forget the text and empty the KV cache"""


class TextCommands:
    """The :commands above, for scripts/repl.py's Repl."""

    def cmd_tokens(self, args, rest) -> None:
        self.session.require_text()
        self.show_tokens()
        self.show_table(self.session.table)

    def cmd_text(self, args, rest) -> None:
        if not rest:
            raise ReplError(":text needs the text, e.g. :text :) is a smiley")
        self.show(self.session.set_text(rest), 0)

    def cmd_add(self, args, rest) -> None:
        if not rest:
            raise ReplError(":add needs the text to append, e.g. :add  and Berlin")
        change = self.session.extend(rest)
        self.show(change, change.kept)

    def cmd_back(self, args, rest) -> None:
        self.session.require_text()
        n, total = int_arg(args, 1, "back", minimum=1), len(self.session.ids)
        if n >= total:
            raise ReplError(f"the text has {total} tokens: :back can remove at most {total - 1} (or :reset)")
        self.write(self.style("dim", f"[removing {n}; {total - n} tokens left]"))
        self.show(self.session.back(n))

    def cmd_pick(self, args, rest) -> None:
        self.session.require_text()
        if len(args) != 1:
            raise ReplError(":pick needs one number, the rank in the table, e.g. :pick 2")
        k, n = int_arg(args, None, "pick", minimum=1), len(self.candidates)
        if k > n:
            raise ReplError(f"the table has {n} candidates; pick 1..{n} (or :set show N)")
        change = self.session.pick(k)
        self.show(change, change.kept)

    def cmd_reset(self, args, rest) -> None:
        self.session.reset()
        self.write("reset: no text, empty KV cache")

    def cmd_truncate(self, args, rest) -> None:
        if self.session.pending is None:
            raise ReplError("nothing to truncate: :truncate applies to the last text that did not fit the context")
        change = self.session.truncate()
        self.write(f"[kept the last {change.n_tokens} tokens]")
        self.show(change, 0)

    def cmd_gen(self, args, rest) -> None:
        s = self.session
        s.require_text()
        n = int_arg(args, s.settings.max_new_tokens, "gen", minimum=1)
        if len(s.ids) >= s.max_len:
            raise ReplError(f"the context is full ({s.max_len} tokens): :back N to make room")
        run = s.generate(n, stop=self.stop)
        color_on, color_off = (self.style("gen", "x").split("x") if self.style.enabled else ("", ""))
        self.out.write(color_on)
        try:
            for step in run:
                if step.text:
                    self.out.write(step.text)  # streamed as it comes
                    self.out.flush()
        except KeyboardInterrupt:  # arrived while printing: the generation adds what it made
            run.close("interrupted")
        finally:
            self.out.write(color_off)
        r = run.result
        self.write("")
        mode = "greedy" if r.seed is None else f"sampled, seed {r.seed}"
        reason = f"stop token {show_piece(self.tok.id_to_piece(r.stop_token))}" if r.stop_token is not None else r.reason
        rate = f", {len(r.new_ids) / r.elapsed_s:.1f} tokens/s" if r.new_ids and r.elapsed_s > 0 else ""
        self.write(self.style("dim", f"[{len(r.new_ids)} tokens, {mode}, stopped: {reason}{rate}]"))
        if r.new_ids and r.change is None:  # Ctrl-C while adding them: the text is as before
            self.write(self.style("dim", "[interrupted: the generated tokens were not added]"))
        elif r.change is not None:
            self.show(r.change, r.change.kept)


__all__ = ["TextCommands", "HELP", "HELP_END"]
