// diffuse studio: reads a Server-Sent Events stream from a fetch() response (EventSource only does
// GET, and generation is a POST). Yields { event, data } with data parsed as JSON.

function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, "\n");
    let cut = buf.indexOf("\n\n");
    while (cut >= 0) {
      const ev = parseBlock(buf.slice(0, cut));
      buf = buf.slice(cut + 2);
      if (ev) yield ev;
      cut = buf.indexOf("\n\n");
    }
  }
}
