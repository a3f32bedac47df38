"""Reading and writing dictionaries in other libraries' formats."""
