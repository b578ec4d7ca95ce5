// Sign up and log in.

import { api, ApiError, type User } from "./api.js";
import { h, replace } from "./dom.js";

export function authView(root: HTMLElement, mode: "login" | "signup", done: (user: User) => void): () => void {
  document.title = mode === "login" ? "Log in · Tandem" : "Sign up · Tandem";
  const error = h("p", { class: "form-error", role: "alert", id: "auth-error" });
  const email = h("input", { id: "email", name: "email", type: "email", autocomplete: "email", required: true });
  const password = h("input", {
    id: "password",
    name: "password",
    type: "password",
    autocomplete: mode === "login" ? "current-password" : "new-password",
    minlength: 8,
    required: true,
  });
  const name = h("input", { id: "name", name: "name", type: "text", autocomplete: "name", required: true, maxlength: 128 });
  const submit = h("button", { type: "submit", class: "primary" }, mode === "login" ? "Log in" : "Create account");
  const form = h(
    "form",
    { class: "card auth", "aria-describedby": "auth-error" },
    h("h1", {}, mode === "login" ? "Log in to Tandem" : "Create your Tandem account"),
    mode === "signup" ? h("label", { for: "name" }, "Name") : null,
    mode === "signup" ? name : null,
    h("label", { for: "email" }, "Email"),
    email,
    h("label", { for: "password" }, "Password"),
    password,
    mode === "signup" ? h("p", { class: "hint" }, "At least 8 characters.") : null,
    error,
    submit,
    h(
      "p",
      { class: "switch" },
      mode === "login" ? "New here? " : "Have an account? ",
      h("a", { href: mode === "login" ? "/signup" + location.search : "/login" + location.search }, mode === "login" ? "Create an account" : "Log in"),
    ),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      const body =
        mode === "login"
          ? { email: email.value, password: password.value }
          : { email: email.value, password: password.value, name: name.value };
      const r = await api<{ user: User }>("POST", mode === "login" ? "/api/auth/login" : "/api/auth/signup", body);
      done(r.user);
    } catch (e) {
      error.textContent = e instanceof ApiError ? e.message : "Could not reach the server.";
      submit.disabled = false;
    }
  });
  replace(root, h("main", { class: "page auth-page" }, h("div", { class: "brand" }, "Tandem"), form));
  (mode === "signup" ? name : email).focus();
  return () => {};
}
