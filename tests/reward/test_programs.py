"""From answers to rendered programs: extraction, one render per distinct program, failure kinds."""

from __future__ import annotations


def test_a_program_sampled_twice_renders_once_and_both_rows_get_its_image():
    from concurrent.futures import Future

    from PIL import Image

    from vinci.render import RenderResult
    from vinci.reward import programs

    class RecordingPool:
        def __init__(self):
            self.jobs = []

        def submit(self, jobs):
            self.jobs = list(jobs)
            done = Future()
            done.set_result([RenderResult(True, Image.new("RGB", (8, 8), (i, 0, 0))) for i in range(len(jobs))])
            return done

    svg = lambda fill: f'```svg\n<svg xmlns="http://www.w3.org/2000/svg"><rect fill="{fill}"/></svg>\n```'  # noqa: E731
    texts = [svg("red"), svg("blue"), svg("red"), "no fence here"]  # rows 0 and 2 are one program
    pool = RecordingPool()
    sent = programs.submit(pool, texts, ["svg"] * 4)
    renders = sent.wait()
    assert [job.code for job in pool.jobs] == [sent.codes[0], sent.codes[1]] and len(sent.jobs) == 2
    assert renders[0] is renders[2] and renders[0].image.getpixel((0, 0)) == (0, 0, 0)
    assert renders[1].image.getpixel((0, 0)) == (1, 0, 0)
    assert not renders[3].ok and renders[3].kind == "no-output" and renders[3].error == "no fenced svg block"
