"""The prompts users actually type, for evaluate.py's `short` and `paraphrase` splits.

Part of evaluate.py's measuring tools. Every training caption is dense ("A 3 moves right slowly, never touching a
wall."), but users type short prompts ("A 3 moves right slowly.") and their own words ("Rightward slides the
figure 3, unhurriedly."). Sora's report answers with prompt expansion (a short prompt rewritten into a caption of
the kind the model trained on; sample.py does it by default), as DALL-E 3 does ("Improving Image Generation with
Better Captions", Betker et al., 2023). These two sets measure how well that works, from the ground truth of real
`val` scenes:

- short: digit, direction and speed in the simplest words, no bounce clause;
- paraphrase: word orders the caption grammar never produces and verbs, nouns and speed words it never uses
  (slides, figure, unhurriedly, ...); the direction words stay known words, so an expanded paraphrase still says
  the asked direction, while an unknown speed word is lost and the expansion draws a speed.
"""

import data

# Direction words the parser knows, in orders and forms of our own.
_PARAPHRASE_DIRECTIONS = {
    "left": ("leftward", "to the left", "left"), "right": ("rightward", "to the right", "right"),
    "up": ("upward", "up", "north"), "down": ("downward", "down", "south"),
    "up-left": ("up and left", "to the upper left", "north-west"),
    "up-right": ("up and right", "to the upper right", "north-east"),
    "down-left": ("down and left", "to the lower left", "south-west"),
    "down-right": ("down and right", "to the lower right", "south-east"),
}
_PARAPHRASE_VERBS = ("slides", "zooms", "floats", "wanders", "shoots", "creeps", "races", "sails")
_PARAPHRASE_NOUNS = ("the figure", "the symbol", "a", "the character", "the", "a little")
_PARAPHRASE_SPEEDS = {"slow": ("slowly", "unhurriedly", "at a crawl", "gently", "without any hurry"),
                      "fast": ("quickly", "briskly", "in a hurry", "rapidly", "speedily")}
_PARAPHRASE_STILL = ("{s} holds still", "{s} is motionless", "{s} remains still", "still sits {s}")


def _short_clause(motion):
    d = motion.digit
    article = "An" if d == 8 else "A"
    if motion.direction == data.STILL:
        return f"{article} {d} stays still"
    direction = motion.direction.replace("-", " and to the ") if "-" in motion.direction else motion.direction
    speed = {"slow": "slowly", "fast": "quickly"}[motion.speed]
    return f"{article} {d} moves {direction} {speed}"


def short_prompt(motions):
    """The simplest prompt for a scene's motions: 'A 3 moves right slowly.', 'An 8 stays still.'; several digits
    are joined with ', and '."""
    clauses = [_short_clause(m) for m in motions]
    return ", and ".join([clauses[0]] + [c[0].lower() + c[1:] for c in clauses[1:]]) + "."


def _paraphrase_clause(motion, rng):
    pick = lambda options: options[rng.integers(len(options))]
    d = str(motion.digit) if rng.random() < 0.7 else data.DIGIT_NAMES[motion.digit]
    subject = f"{pick(_PARAPHRASE_NOUNS)} {d}"
    if motion.direction == data.STILL:
        return pick(_PARAPHRASE_STILL).format(s=subject)
    verb, direction = pick(_PARAPHRASE_VERBS), pick(_PARAPHRASE_DIRECTIONS[motion.direction])
    speed = pick(_PARAPHRASE_SPEEDS[motion.speed])
    style = rng.integers(4)
    if style == 0:
        return f"{subject} {verb} {direction} {speed}"
    if style == 1:
        return f"{direction} {verb} {subject}, {speed}"  # the direction before the digit
    if style == 2:
        return f"{speed}, {subject} {verb} {direction}"
    return f"there is {subject} that {verb} {direction}, {speed}"


def paraphrase_prompt(motions, rng):
    """A prompt for a scene's motions in words and orders the caption grammar does not produce (rng: numpy
    Generator), e.g. 'Rightward slides the figure 3, unhurriedly.'"""
    text = "; ".join(_paraphrase_clause(m, rng) for m in motions)
    return text[0].upper() + text[1:] + "."
