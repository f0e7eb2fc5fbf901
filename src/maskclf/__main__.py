from maskclf.cli import app

app(prog_name="maskclf")
