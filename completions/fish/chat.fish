complete -c chat -s s -l server -d 'The chatd to talk to, as HOST or HOST:PORT (port 5000 when none is given)' -r
complete -c chat -s n -l name -d 'The name to join as; asked for when not given (your login name when input is not a terminal)' -r
complete -c chat -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chat -s V -l version -d 'Print version'
