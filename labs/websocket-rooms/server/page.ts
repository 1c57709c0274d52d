/**
 * A page to try the rooms by hand (`lab serve`, then open it in two tabs): it logs in through the demo
 * login, connects, joins a room, and resumes from the last message id after a reconnect.
 */
export const PAGE = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>WebSocket rooms</title>
<style>body{font:15px system-ui;margin:2rem;max-width:42rem}#log{border:1px solid #ccc;height:18rem;overflow:auto;padding:.5rem;white-space:pre-wrap}input{margin:.2rem}</style>
<h1>WebSocket rooms</h1>
<p>User <input id="user" value="alice" size="8"> room <input id="room" value="lobby" size="8">
<button id="connect">Connect</button> <button id="drop">Drop connection</button></p>
<div id="log"></div>
<p><input id="text" size="40" placeholder="message"> <button id="send">Send</button></p>
<script>
const $ = (id) => document.getElementById(id);
const log = (line) => { $('log').textContent += line + '\\n'; $('log').scrollTop = 1e9; };
let ws; let lastId;
async function connect() {
  const user = $('user').value; const room = $('room').value;
  const res = await fetch('/api/token?user=' + encodeURIComponent(user));
  if (!res.ok) return log('login failed: ' + (await res.json()).detail);
  const { token } = await res.json();
  ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws?token=' + encodeURIComponent(token));
  ws.onopen = () => ws.send(JSON.stringify(lastId ? { type: 'join', room, lastId } : { type: 'join', room }));
  ws.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type === 'message') { lastId = frame.id; log(frame.from + ': ' + frame.text + '   (' + frame.id + ')'); }
    else log('[' + frame.type + '] ' + JSON.stringify(frame));
  };
  ws.onclose = (event) => log('[closed ' + event.code + '] ' + event.reason + (lastId ? ' (Connect resumes after ' + lastId + ')' : ''));
}
$('connect').onclick = connect;
$('drop').onclick = () => ws && ws.close(4000, 'dropped by hand');
$('send').onclick = () => { ws.send(JSON.stringify({ type: 'send', room: $('room').value, text: $('text').value })); $('text').value = ''; };
</script>
</html>
`;
