"""The command line of ``python -m mpt_async``, one module per job.

- :mod:`.argtypes`: argparse value types, shared with the emulator's command line.
- :mod:`.common`: exit statuses, error lines, secrets kept out of what is printed.
- :mod:`.service`: the options and set-up shared by the commands that call the service.
- :mod:`.chat`: the ``chat`` command (one question, or a conversation), reading questions
  with :mod:`.terminal` (line editing and history on a terminal).
- :mod:`.batch`: the ``batch`` command, with its input lines (:mod:`.inputs`), its output
  file (:mod:`.journal`) and its progress line (:mod:`.progress`).

Nothing is imported here, so that the emulator's command line can use :mod:`.argtypes`
without loading the client.
"""
