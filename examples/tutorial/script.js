// The tutorial's client: plain text out, plain text in.
const ws = new WebSocket('ws://localhost:3002');
const form = document.getElementById('form');
const input = document.getElementById('input');
const messages = document.getElementById('messages');

ws.onmessage = (event) => {
  const li = document.createElement('li');
  li.textContent = event.data;
  messages.appendChild(li);
  window.scrollTo(0, document.body.scrollHeight);
};

form.addEventListener('submit', (e) => {
  e.preventDefault();
  if (input.value) {
    ws.send(input.value);
    input.value = '';
  }
});
