"""The character tokenizer against plain Python strings, and a tiny seeded encoder: shapes, padding
invariance, the empty caption, caption dropout's rate, and that it can learn to tell two captions apart."""
import pytest
import torch

from text_encoder import (BOS_ID, PAD_ID, VOCAB_SIZE, TextEncoder, TextEncoderConfig, detokenize,
                          tokenize)

TINY = TextEncoderConfig(max_len=32, dim=32, depth=2, heads=4)


def tiny_encoder(seed=0):
    torch.manual_seed(seed)
    return TextEncoder(TINY).eval()


def test_tokenize_round_trip_bos_and_padding():
    captions = ["a red 3 moves left", "", "~ All printable: !@#$%^&*()_+{}|:<>?"]
    ids, mask = tokenize(captions, max_len=64)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.shape == mask.shape == (3, 1 + max(len(c) for c in captions))  # padded to the longest, not max_len
    assert (ids[:, 0] == BOS_ID).all()
    assert mask.sum(1).tolist() == [1 + len(c) for c in captions]
    assert ids[~mask].eq(PAD_ID).all() and ids[mask].ne(PAD_ID).all()
    assert ids.max() < VOCAB_SIZE
    assert detokenize(ids) == captions
    every_char = "".join(chr(i) for i in range(32, 127))
    assert detokenize(tokenize([every_char], 128)[0]) == [every_char]


@pytest.mark.parametrize("bad,char", [("café au lait", "é"), ("two\nlines", "\n")])
def test_unknown_character_error_names_it(bad, char):
    with pytest.raises(ValueError) as error:
        tokenize(["fine", "also fine", bad], max_len=64)
    message = str(error.value)
    assert f"caption 2 has {char!r} at position {bad.index(char)}" in message
    assert "printable ASCII" in message


def test_over_long_caption_raises_with_the_fix():
    tokenize(["x" * 31], max_len=32)  # 31 characters + BOS fit exactly
    with pytest.raises(ValueError, match=r"caption 1 has 32 characters.*max_len = 32.*TextEncoderConfig.max_len"):
        tokenize(["ok", "x" * 32], max_len=32)


def test_shapes_and_empty_caption():
    encoder = tiny_encoder()
    features, mask, pooled = encoder.encode(["a green 5 bounces", ""])
    assert features.shape == (2, 18, 32) and mask.shape == (2, 18) and pooled.shape == (2, 32)
    assert torch.isfinite(features).all() and torch.isfinite(pooled).all()
    features, mask, pooled = encoder.encode([""])  # the unconditional caption alone: just BOS
    assert features.shape == (1, 1, 32) and mask.all()
    torch.testing.assert_close(pooled, features[:, 0])


def test_padding_invariance():
    encoder = tiny_encoder()
    caption = "a blue 7"
    alone, _, pooled_alone = encoder.encode([caption])
    batched, mask, pooled_batched = encoder.encode([caption, "a longer one: a yellow 2 falls", ""])
    n = len(caption) + 1
    assert mask[0].sum() == n
    torch.testing.assert_close(batched[0, :n], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled_batched[0], pooled_alone[0], atol=1e-5, rtol=0)
    _, _, pooled_empty = encoder.encode([""])
    torch.testing.assert_close(pooled_batched[2], pooled_empty[0], atol=1e-5, rtol=0)


def test_encoder_learns_to_tell_two_captions_apart():
    # The two captions differ in one character only, so the encoder must carry that character into pooled.
    encoder = tiny_encoder().train()
    probe = torch.nn.Linear(TINY.dim, 1)
    optimizer = torch.optim.Adam([*encoder.parameters(), *probe.parameters()], lr=3e-3)
    captions, labels = ["a red 3 moves left", "a red 8 moves left"], torch.tensor([0.0, 1.0])
    for _ in range(30):
        _, _, pooled = encoder.encode(captions)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(probe(pooled).squeeze(1), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05  # from ln 2 = 0.69 for a probe that cannot tell them apart
