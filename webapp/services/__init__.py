"""Services own the logic: views and the API call them and render what they return."""
