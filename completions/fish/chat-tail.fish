complete -c chat-tail -s s -l server -d 'The chatd to talk to, as HOST or HOST:PORT (port 5000 when none is given)' -r
complete -c chat-tail -s n -l name -d 'The name to join as [default: $CHAT_NAME or your login name, with -tail after it, so it never collides with your own chat]' -r
complete -c chat-tail -s c -l count -d 'Exit after N messages' -r
complete -c chat-tail -l raw -d 'Print the protocol lines as they come (MSG Ana hola)'
complete -c chat-tail -l json -d 'Print one JSON object per line: {"event":"msg","from":"Ana","text":"hola"}'
complete -c chat-tail -s m -l messages-only -d 'Print messages only, not joins and leaves'
complete -c chat-tail -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chat-tail -s V -l version -d 'Print version'
