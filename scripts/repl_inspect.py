"""llama-repl's commands that look inside the model: :lens, :attn, :pca, :export, :verify,
and the experiments :ablate, :patch, :dla, :steer (llama.interp, through the Session's
methods of llama.session_interp). Each parses its words, calls the Session and prints what
it returns; scripts/repl.py's Repl inherits them (InspectCommands) with its printing
(write, error, style, show_table) and its session."""

from __future__ import annotations

from pathlib import Path

from llama.interp import MODES, SITES
from llama.session import Table

from .terminal import ReplError, index_arg, is_int, keywords, png_path, show_piece

HELP = """\
  :lens                logit lens: each layer's best guess for the next token
  :attn [L] [H] [FILE] save an attention heatmap of layer L (head H, or all heads) as PNG
  :pca [FILE]          save a PCA plot of the residual stream of the current text as PNG
  :export [FILE] [NAMES...]  save the activations of the current text (.safetensors);
                       NAMES are hook names or globs, e.g. 'layers.*.resid_post'
  :ablate L H [L H ...] [mean]  the table with those heads ablated (L.H works too), beside
                       the clean one; mean: each head set to its average, not to 0
  :patch "TEXT" [SITE] [L [POS|HEAD]] [answer=TOK] [wrong=TOK]  activation patching from
                       the current text into TEXT (same length): the top cells of a sweep
                       of SITE (default resid_post), or TEXT's table patched at one place
  :dla [N] [heads] [answer=TOK] [wrong=TOK]  direct logit attribution: the N largest parts
                       of the top token's logit (TOK: a token's text, ' Paris', or #ID)
  :steer "PLUS" "MINUS" L [SCALE] [N] [how=last]  the table with SCALE x (residual(PLUS) -
                       residual(MINUS)) added after layer L; N: tokens of steered text
  :verify              recompute the whole text without the cache and compare"""

ABLATE_USAGE = ("usage: :ablate LAYER HEAD [LAYER HEAD ...] [mean] (or LAYER.HEAD ...), "
                "e.g. :ablate 23 4 29 1 or :ablate 23.4 mean")
PATCH_USAGE = ('usage: :patch "CORRUPTED TEXT" [SITE] [LAYER [POSITION|HEAD]] [answer=TOKEN] '
               f"[wrong=TOKEN]; quote the text; sites: {', '.join(SITES)}")
DLA_USAGE = "usage: :dla [N] [heads] [answer=TOKEN] [wrong=TOKEN], e.g. :dla 10 heads"
STEER_USAGE = ('usage: :steer "PLUS" "MINUS" LAYER [SCALE] [N] [how=mean|last], e.g. '
               ':steer " happy" " sad" 6 4 20 (SCALE default 1; N tokens of steered text)')


class InspectCommands:
    """The :commands above, for scripts/repl.py's Repl."""

    # -- printing two tables side by side ---------------------------------------------
    def show_tables(self, titles: tuple[str, str], left: Table, right: Table) -> None:
        s = self.style
        width = min(20, max(len(show_piece(r.piece)) for r in left.rows + right.rows))

        def cell(r) -> tuple[str, str]:  # (plain, coloured): the plain one measures the width
            p = show_piece(r.piece)
            pad = " " * max(0, width - len(p))
            return (f"{r.rank:>4}. {p}{pad}  {r.prob:.4f} #{r.id}",
                    f"{r.rank:>4}. {s('piece', p)}{pad}  {r.prob:.4f} {s('id', f'#{r.id}')}")

        lefts, rights = [cell(r) for r in left.rows], [cell(r) for r in right.rows]
        column = max([len(p) for p, _ in lefts] + [6 + len(titles[0])]) + 4
        self.write(s("head", f"{'':6}{titles[0]:<{column - 6}}{'':6}{titles[1]}"))
        for i in range(max(len(lefts), len(rights))):
            plain, coloured = lefts[i] if i < len(lefts) else ("", "")
            self.write(f"{coloured}{' ' * (column - len(plain))}{rights[i][1] if i < len(rights) else ''}")

    def _draw(self, view, path: Path) -> None:
        try:
            import llama.plots as plots
        except ImportError as e:
            raise ReplError(f"plotting is not available ({e}); install matplotlib") from None
        self.write(f"saved {plots.save_figure(plots.draw(view), path)}")

    # -- looking at the current text -------------------------------------------------
    def cmd_verify(self, args, rest) -> None:
        v = self.session.verify()
        self.write(
            f"KV cache {'OK' if v.ok else 'MISMATCH'}: {v.n_tokens} tokens; cached and from-scratch "
            f"logits differ by at most {v.max_abs_diff:.2e}; same top-1: {v.same_top1}"
        )

    def cmd_lens(self, args, rest) -> None:
        report = self.session.lens()
        self.write(f"logit lens after {show_piece(report.token.piece)} (position {report.position}): "
                   "final norm + output applied to the residual stream")
        for stage in report.stages:
            best = "  ".join(f"{self.style('piece', show_piece(r.piece))} {r.prob:.3f}" for r in stage.candidates)
            self.write(f"  {stage.label:<11} {best}")

    def cmd_attn(self, args, rest) -> None:
        self.session.require_text()
        nums = [a for a in args if is_int(a)]
        files = [a for a in args if not is_int(a)]
        if len(nums) > 2 or len(files) > 1:
            raise ReplError("usage: :attn [LAYER] [HEAD] [FILE.png]")
        a = self.session.model.args
        layer = index_arg(nums[0] if nums else "0", a.n_layers, "layer")
        head = index_arg(nums[1], a.n_heads, "head") if len(nums) > 1 else None
        path = png_path(files[0] if files else f"attention_layer{layer}" + (f"_head{head}" if head is not None else "") + ".png")
        self._draw(self.session.view("attention", layer=layer, head=head), path)

    def cmd_pca(self, args, rest) -> None:
        self.session.require_text()
        if len(args) > 1:
            raise ReplError("usage: :pca [FILE.png]")
        if len(self.session.ids) < 2:
            raise ReplError("a PCA plot needs at least 2 tokens")
        self._draw(self.session.view("pca"), png_path(args[0] if args else "pca.png"))

    def cmd_export(self, args, rest) -> None:
        e = self.session.export(args[0] if args else "activations.safetensors", args[1:] or None)
        self.write(f"saved {e.n_tensors} tensors ({e.n_bytes / 1e6:.1f} MB) for {e.n_tokens} tokens to {e.path}")

    # -- experiments (llama.interp) ---------------------------------------------------
    def cmd_ablate(self, args, rest) -> None:
        s = self.session
        s.require_text()
        mode, nums = "zero", []
        for word in args:
            layer, dot, head = word.partition(".")
            if word.lower() in MODES:
                mode = word.lower()
            elif dot and is_int(layer) and is_int(head):
                nums += [layer, head]
            elif is_int(word):
                nums.append(word)
            else:
                raise ReplError(f"{word!r} is not a layer or a head; {ABLATE_USAGE}")
        if not nums or len(nums) % 2:
            raise ReplError(ABLATE_USAGE)
        a = s.model.args
        heads = [(index_arg(nums[i], a.n_layers, "layer"), index_arg(nums[i + 1], a.n_heads, "head"))
                 for i in range(0, len(nums), 2)]
        r = s.ablate(heads, mode)
        top = r.clean.rows[0]
        self.write(f"{mode}-ablated {', '.join(f'L{L}.H{H}' for L, H in r.heads)}: "
                   f"{show_piece(top.piece)} {r.top_prob[0]:.4f} -> {r.top_prob[1]:.4f}")
        self.show_tables(("clean", "ablated"), r.clean, r.ablated)

    def cmd_patch(self, args, rest) -> None:
        s = self.session
        s.require_text()
        words, opts = keywords(args, ("answer", "wrong"), PATCH_USAGE)
        if not words:
            raise ReplError(PATCH_USAGE)
        corrupt, words = words[0], words[1:]
        site = words.pop(0) if words and not is_int(words[0]) else "resid_post"
        if site not in SITES:
            raise ReplError(f"there is no patching site {site!r}; {PATCH_USAGE}")
        if len(words) > 2 or not all(is_int(w) for w in words):
            raise ReplError(PATCH_USAGE)
        if not words:
            return self._patch_sweep(corrupt, site, opts)
        a = s.model.args
        layer = index_arg(words[0], a.n_layers, "layer")
        second = words[1] if len(words) > 1 else None
        head = position = None
        if site in ("heads", "kv_heads"):
            if second is None:
                raise ReplError(f":patch TEXT {site} LAYER HEAD patches one head: give the head")
            n, what = (a.n_heads, "head") if site == "heads" else (a.n_kv_heads, "kv head")
            head = index_arg(second, n, what)
        elif second is not None:
            position = index_arg(second, len(s.ids), "position")
        r = s.patch_at(corrupt, site, layer, position=position, head=head, **opts)
        where = (f"head {r.head}" if r.head is not None else
                 "every position" if r.position is None else f"position {r.position}")
        self.write(f"patched {site} of layers.{r.layer}, {where} ({', '.join(r.hooks)}), from the "
                   f"current text into {corrupt!r}: metric {r.score:.3f}")
        self.write(self.style("dim", r.metric.describe()))
        self.show_tables(("corrupted", "patched"), r.corrupted, r.patched)

    def _patch_sweep(self, corrupt: str, site: str, opts: dict) -> None:
        r = self.session.patch(corrupt, site, **opts)
        res = r.result
        self.write(f"{res.describe()}, from the current text into {corrupt!r}")
        self.write(self.style("dim", r.metric.describe()))
        self.write(f"top {len(r.top)} of {res.scores.numel()} cells (score: 1 restores the clean answer):")
        for c in r.top:
            if c.clean_token is not None:
                what = f"position {c.column:<3} {show_piece(c.clean_token)}"
                if c.corrupt_token != c.clean_token:
                    what += f" / {show_piece(c.corrupt_token)}"
            elif c.query_heads is not None:
                what = f"kv head {c.column} (query heads {c.query_heads[0]}-{c.query_heads[-1]})"
            else:
                what = f"head {c.column}"
            self.write(f"  layers.{c.layer:<4} {what:<34} {c.score:7.3f}")

    def cmd_dla(self, args, rest) -> None:
        s = self.session
        s.require_text()
        words, opts = keywords(args, ("answer", "wrong"), DLA_USAGE)
        heads, n = False, 8
        for word in words:
            if word.lower() == "heads":
                heads = True
            elif word.isdigit() and int(word) >= 1:
                n = int(word)
            else:
                raise ReplError(f"{word!r}: {DLA_USAGE}")
        r = s.dla(opts.get("answer"), opts.get("wrong"), heads=heads, top=n)
        a = r.attribution
        self.write(f"direct logit attribution of {a.target_label} after "
                   f"{show_piece(s.tokens(a.position)[0].piece)} (position {a.position}): logit "
                   f"{a.logit:.3f} = the sum of {r.n_parts} parts (the final norm's scale frozen "
                   "at its value for the whole residual)")
        for name, value in r.parts:
            self.write(f"  {name:<14} {value:+9.3f}")
        if r.n_parts > len(r.parts):
            self.write(f"  {f'{r.n_parts - len(r.parts)} others':<14} {r.rest:+9.3f}")

    def cmd_steer(self, args, rest) -> None:
        s = self.session
        s.require_text()
        words, opts = keywords(args, ("how",), STEER_USAGE)
        if not 3 <= len(words) <= 5 or not is_int(words[2]):
            raise ReplError(STEER_USAGE)
        plus, minus = words[0], words[1]
        layer = index_arg(words[2], s.model.args.n_layers, "layer")
        try:
            scale = float(words[3]) if len(words) > 3 else 1.0
        except ValueError:
            raise ReplError(f":steer needs a number for SCALE, got {words[3]!r}; {STEER_USAGE}") from None
        if len(words) > 4 and not words[4].isdigit():
            raise ReplError(f":steer needs a whole number >= 0 for N, got {words[4]!r}")
        n = int(words[4]) if len(words) > 4 else 0
        r = s.steer(plus, minus, layer, scale, how=opts.get("how", "mean"), generate=n)
        v = r.vector
        how = "mean over positions" if v.how == "mean" else "last positions"
        self.write(f"steering: {r.scale:g} x ({plus!r} - {minus!r}, {how}; norm {v.norm:.3f}) "
                   f"added to {v.hook}")
        self.show_tables(("without", "steered"), r.before, r.after)
        if r.generation is not None:
            mode = "greedy" if r.seed is None else f"sampled, seed {r.seed}"
            self.write(self.style("dim", f"[steered continuation: {len(r.generation.ids)} tokens, {mode}]"))
            self.write(self.style("gen", r.generation.text or ""))


__all__ = ["InspectCommands", "HELP", "ABLATE_USAGE", "PATCH_USAGE", "DLA_USAGE", "STEER_USAGE"]
