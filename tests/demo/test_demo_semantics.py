"""What the shipped demo model draws, read back by the evaluator's `analyse` (tests/demo/
test_demo_data.py shows `analyse` reads every training clip right).

Seeds: each check uses the evaluator's first seeds (0, 1), not seeds picked for passing. The
evaluator (`python -m animdiff.demo.evaluate`, 4 colours x 4 directions x 4 seeds) measured the
colour and the direction right in 64 of 64 clips each.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from animdiff.demo import data
from animdiff.demo.evaluate import analyse, jumps, make_animator, render

# Colour and motion read from rendered pixels: CI runs these again with the portable CPU kernels.
pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def animator():
    return make_animator()


def _frame_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def _moves(reading) -> bool:
    """Travels at least half the data's shortest path, and is seen in every frame."""
    return reading.visible == 1.0 and reading.travel >= 0.5 * data.TRAVEL[0]


def _path(reading, axis: int) -> list[float]:
    return [c[axis] for c in reading.centroids if c is not None]


def test_a_red_ball_moving_right_is_a_red_blob_whose_x_increases(animator) -> None:
    reading = analyse(render(animator, "a red ball moving right", 0))
    assert reading.colour == "red"
    assert _moves(reading)
    assert reading.direction == "right"
    x = _path(reading, 0)
    assert x[-1] - x[0] >= 0.5 * data.TRAVEL[0]


def test_a_blue_ball_moving_up_is_a_blue_blob_whose_y_decreases(animator) -> None:
    reading = analyse(render(animator, "a blue ball moving up", 0))
    assert reading.colour == "blue"
    assert _moves(reading)
    assert reading.direction == "up"
    y = _path(reading, 1)
    assert y[0] - y[-1] >= 0.5 * data.TRAVEL[0]


def test_a_green_ball_moving_down_moves_down(animator) -> None:
    reading = analyse(render(animator, "a green ball moving down", 1))
    assert reading.colour == "green"
    assert _moves(reading)
    assert reading.direction == "down"


def test_every_colour_word_gives_its_colour_and_left_goes_left(animator) -> None:
    for colour in data.COLOURS:
        reading = analyse(render(animator, f"a {colour} ball moving left", 1))
        assert reading.colour == colour
        assert reading.direction == "left"


def test_prompt_travel_turns_red_into_blue(animator) -> None:
    frames = render(animator, "0: a red ball moving right\n8: a blue ball moving right", 0)
    colours = analyse(frames).colours
    assert colours[0] == "red"
    assert all(c == "blue" for c in colours[10:])
    switch = next(i for i, c in enumerate(colours) if c == "blue")
    assert 1 <= switch <= 9  # the embeddings blend over frames 0-8, so does the colour


def test_closed_loops_end_nearer_their_first_frame(animator) -> None:
    prompt = "a green ball moving left"
    distance = {}
    for mode in ("N", "R+P", "A"):
        frames = render(animator, prompt, 0, frames=24, context=16, closed_loop=mode)
        distance[mode] = _frame_distance(frames[-1], frames[0])
    assert distance["A"] < distance["N"]
    assert distance["R+P"] < distance["N"]


def test_a_video_that_fits_one_window_is_the_same_at_the_references_long_video_settings(animator) -> None:
    # The demo's own closed loop, fuse and overlap only change videos longer than the context: the
    # final latents are equal bit for bit (pixels alone could hide a rounding difference).
    from animdiff.demo.evaluate import demo_params

    reference = {"closed_loop": "R-P", "fuse": "overwrite", "overlap": -1}
    own, theirs = (
        animator.run(demo_params("a red ball moving right", 0, **options), write=False).latents
        for options in ({}, reference)
    )
    assert torch.equal(own, theirs)


def test_48_frames_through_context_16_have_no_seam_jump(animator) -> None:
    # At the demo model's own long-video settings (windows 4 frames apart, averaged, no loop). Over
    # the evaluator's 16 such videos (4 prompts x seeds 0-3, README) 13 had no jump; this one (the
    # evaluator's yellow prompt and first seed) moves at most 4.9 px a frame against a jump's 6.8
    # (the same with ATEN_CPU_CAPABILITY=default). The three with a jump are "a green ball moving left".
    reading = analyse(render(animator, "a yellow ball moving down", 0, frames=48, context=16))
    assert reading.visible == 1.0
    assert jumps(reading, data.data_step()) == []
    # Every frame yellow: stage 4's decoder draws the windows' averaged latents in the ball's colour
    # (with stage 1's, 44 of these 48 frames read yellow, the rest orange or red).
    assert reading.colours == ["yellow"] * 48
    # It ends lower than it started, though not every move goes down (the README's `forward`).
    path = _path(reading, 1)
    assert path[-1] - path[0] > data.TRAVEL[0]


def test_the_same_48_frames_at_the_references_seams_keep_the_ball_and_its_colour(animator) -> None:
    # The reference's settings: the last window overwrites, R-P asks for a loop, windows 12 apart.
    options = {"frames": 48, "context": 16, "closed_loop": "R-P", "fuse": "overwrite", "overlap": -1}
    reading = analyse(render(animator, "a yellow ball moving down", 0, **options))
    assert reading.visible == 1.0
    assert reading.colours == ["yellow"] * 48
    # Not asserted: it jumps once (at frame 15), which is why the demo's own settings differ
    # (3 of the 16 videos above had no jump at these settings), and under R-P it goes down and back
    # in the middle of the frame (30 % of its moves go down by half a data step).


def test_the_evaluator_reports_on_a_small_grid(animator) -> None:
    from animdiff.demo.evaluate import measure

    report = measure(
        animator, colours=("red",), directions=("right", "up"), seeds=(0,), long_frames=24, long_prompts=1
    )
    assert report.colour_accuracy == 1.0  # the evaluator's full grid measured 100 %
    assert report.per_colour == {"red": 1.0}
    assert set(report.per_direction) == {"right", "up"}
    assert report.median_travel > 0 and report.travel_ratio == report.median_travel / report.data_travel
    (video,) = report.long_videos
    assert video["frames"] == 24 and video["colour_kept"] == 1.0 and video["visible"] == 1.0
    assert 0.0 <= video["forward"] <= 1.0


def test_word_dependence_shows_the_colour_word_is_read_and_the_path_seen_at_every_noise_level() -> None:
    from animdiff.demo.evaluate import word_dependence
    from animdiff.demo.train import alphas_cumprod

    ratios = word_dependence(pairs=4, timesteps=(800, 999))
    assert set(ratios) == {"direction", "colour", "path_snr", "frame_order"}
    assert set(ratios["colour"]) == {800, 999}
    # Measured over 12 pairs: 3.1 times the loss with a wrong colour word at t=800 (the README), 2.4
    # over these 4.
    assert ratios["colour"][800] > 1.5
    # The direction word's ratio on these ordinary noisy clips (1.09 at t=800 over 12 pairs, 1.36 at
    # t=950; 0.90 at t=999 over these 4) is not what sampling asks at the top of the schedule, where
    # the shipped weights learnt it on pure noise: not asserted.
    # The same clips at both timesteps: the path's visibility scales as sqrt(alpha_bar / (1 - alpha_bar)).
    a = alphas_cumprod().double()
    scale = ((a[800] / (1 - a[800])) / (a[999] / (1 - a[999]))).sqrt().item()
    assert ratios["path_snr"][800] / ratios["path_snr"][999] == pytest.approx(scale, rel=1e-5)
    # Even at the last timestep the path stands out (the README's diagnosis): 2.8 measured here.
    assert ratios["path_snr"][999] > 2


def test_word_dependence_with_backwards_inputs_gives_both_clips_the_same_input() -> None:
    """The measure behind the README's long-video tries: the shipped weights never learnt to turn
    an input round, so swapping the direction word hardly changes their loss there."""
    from animdiff.demo.evaluate import word_dependence

    ratios = word_dependence(pairs=2, timesteps=(500,), backwards=True)
    assert ratios["direction"][500] == pytest.approx(1.0, abs=0.1)
    assert ratios["colour"][500] > 1.05  # 1.17 measured over these 2 pairs: the colour word is read


def test_frame_order_spread_is_zero_without_positional_encodings_and_small_with_them() -> None:
    """The README's `frame_order` row: with the motion modules' positional encodings zeroed nothing
    tells identical frames apart (a measure that cannot reach 0 there would be measuring something
    else); the shipped weights use them only a little (1.3 to 2.8 % over 12 pairs,
    `--word-dependence`)."""
    import torch

    from animdiff.demo.evaluate import demo_network, frame_order_spread
    from animdiff.demo.model import weights_dir
    from animdiff.demo.train import CaptionTokens, frame_context, load_demo

    model = load_demo(weights_dir())
    network = demo_network(model)
    context = frame_context(model.text_encoder, CaptionTokens(), ["a red ball moving right"])
    noisy = torch.randn((1, 4, data.FRAMES, 8, 8), generator=torch.Generator().manual_seed(0))
    steps = torch.tensor([900])
    with torch.no_grad():
        shipped = frame_order_spread(network, noisy, steps, context)
        encodings = [b for name, b in network.named_buffers() if name.endswith("pos_embed.pe")]
        assert len(encodings) == 12  # one per motion module (v3 layout: 4 down, 8 up)
        for buffer in encodings:
            buffer.zero_()
        blind = frame_order_spread(network, noisy, steps, context)
    assert blind < 1e-5
    assert 1e-3 < shipped < 0.1


def _decoded_average_colour(weights) -> str | None:
    from animdiff.demo.train import clip_latents, load_demo

    vae = load_demo(weights).vae
    rng = np.random.default_rng(0)
    pair = data.random_pair(rng, static_share=0.0)
    while pair[0].colour != "yellow" or pair[0].shape != "ball":
        pair = data.random_pair(rng, static_share=0.0)
    latents, _ = clip_latents(vae, pair[:1])
    average = (latents[0, :, 0] + latents[0, :, 8]) / 2  # the ball's latents 8 frames apart
    with torch.no_grad():
        pixels = vae.decode(average[None] / vae.config.scaling_factor).sample
    frame = ((pixels[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return analyse(frame[None]).colour


def test_the_decoder_draws_two_windows_averaged_latents_of_a_yellow_ball_yellow() -> None:
    # What long videos hand the decoder where overlapping windows disagree on the place. Stage 1's
    # decoder drew this average red, (201, 91, 60) (README, stage 4); the shipped one, after stage 4,
    # draws it yellow.
    from animdiff.demo.model import weights_dir

    assert _decoded_average_colour(weights_dir()) == "yellow"
