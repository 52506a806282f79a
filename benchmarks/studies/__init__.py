"""One-off studies, each of which set one constant; README.md lists the question, answer and figures."""
