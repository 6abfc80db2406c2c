"""Operations commands: planning and checking the deployment on forge."""
