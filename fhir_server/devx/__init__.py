"""Developer experience (issue 16): the token command, the landing page, request logs."""
