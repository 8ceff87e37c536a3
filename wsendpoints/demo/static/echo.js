// The echo page: each message goes to EchoEndpoint on /echo and comes straight back.
import { addLine, describeClose, keepConnected, socketURL } from "/socket.js";

const log = document.getElementById("log");
const form = document.getElementById("send");
const input = document.getElementById("message");

const socket = keepConnected(socketURL("/echo"), document.getElementById("status"), {
  onMessage: (data) => addLine(log, typeof data === "string" ? data : "(binary message)", "echo"),
  onClose: (event) => addLine(log, `connection closed: ${describeClose(event)}`, "error"),
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (socket.send(input.value)) {
    addLine(log, `sent: ${input.value}`, "mine");
    input.value = "";
  } else {
    addLine(log, "not connected; try again in a moment", "error");
  }
});
