"""Where the `done` frame's Markdown is rendered: a short reply where it is asked for, a long one in a thread."""

import threading

from chat import markdown


def spy(monkeypatch):
    threads = []
    render = markdown.render

    def recording(text):
        threads.append(threading.get_ident())
        return render(text)

    monkeypatch.setattr(markdown, "render", recording)
    return threads


async def test_it_renders_a_short_reply_without_a_thread_hand_off(monkeypatch):
    threads = spy(monkeypatch)
    text = "*a* " * (markdown.INLINE_CHARS // 4)
    assert len(text) == markdown.INLINE_CHARS
    assert await markdown.arender(text) == markdown.render(text)
    assert await markdown.arender("**hi** <script>x</script>") == "<p><strong>hi</strong> &lt;script&gt;x&lt;/script&gt;</p>\n"
    assert threads[0] == threads[2] == threading.get_ident()


async def test_it_renders_a_long_reply_in_a_worker_thread(monkeypatch):
    threads = spy(monkeypatch)
    text = "x" * (markdown.INLINE_CHARS + 1)
    assert await markdown.arender(text) == f"<p>{text}</p>\n"
    assert threads[0] != threading.get_ident()
