"""Built-in model families, each registered through kernelzoo's own entry points."""
